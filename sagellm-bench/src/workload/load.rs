//! Load shapes chosen at run time, over the workloads a run selected: how many requests, and a
//! closed loop's concurrency or an open loop's rate. A list of concurrencies or rates is a
//! sweep: every selected workload runs once per value, named `<workload>_c<n>` or
//! `<workload>_r<rate>` (the names `#[workload(concurrency = [..])]` gives), in order, so the
//! results read as a curve.

use crate::workload::session::Sessions;
use crate::workload::setup::Prompts;
use crate::workload::shard::Shard;
use crate::workload::slo::Slo;
use crate::workload::trace::Trace;
use crate::workload::{Arrival, OpenLoop, RampStrategy, Workload};

/// What the command line sets over every selected workload; `None` or an empty list keeps the
/// workload's own value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadShape {
    pub num_requests: Option<usize>,
    /// Closed-loop concurrencies; more than one is a sweep.
    pub concurrency: Vec<usize>,
    /// Open-loop rates in requests per second; more than one is a sweep.
    pub request_rates: Vec<f64>,
    /// How the open loop of `request_rates` spaces its requests.
    pub arrival: OpenLoop,
    pub seed: Option<u64>,
    /// Goodput objectives for every workload.
    pub goodput: Option<Slo>,
    /// Real prompts for every workload, in place of its synthetic ones (`--dataset`).
    pub prompts: Option<Prompts>,
    /// Makes every workload multi-turn (`--sessions`); a `user_tokens` of 0 takes each
    /// workload's `prompt_tokens` as its user message length.
    pub sessions: Option<Sessions>,
    /// A trace every workload replays instead of its own requests (`--trace`).
    pub trace: Option<Trace>,
    /// The part of every workload this process sends (`--shard K/N`).
    pub shard: Option<Shard>,
    /// A cap on requests in flight (`--max-concurrency`): over an open loop (a rate, a ramp,
    /// a trace), what it may keep in flight; over a closed loop, with no rate given, its
    /// concurrency (vLLM's `--max-concurrency` without a rate: as many at once, no more).
    pub max_concurrency: Option<usize>,
    /// Gamma-distributed gaps of this shape for `request_rates` and the ramp (`--burstiness`;
    /// 1 is Poisson).
    pub burstiness: Option<f64>,
    /// A ramp of the rate over each workload: strategy, start and end rate (`--ramp-up-*`).
    pub ramp: Option<(RampStrategy, f64, f64)>,
    /// Percentiles every workload reports beside p50, p95 and p99 (`--percentiles`).
    pub percentiles: Vec<f64>,
}

impl LoadShape {
    /// `workloads` with this shape applied, each checked; a sweep expands every workload into
    /// one per value, keeping the workloads' order.
    pub fn apply(&self, workloads: Vec<Workload>) -> Result<Vec<Workload>, String> {
        let shaped = self.expand(workloads)?;
        for w in &shaped {
            w.validate()
                .map_err(|e| format!("workload `{}`: {e}", w.name))?;
        }
        Ok(shaped)
    }

    /// [`apply`](Self::apply) without checking the workloads, for a caller that names them
    /// its own way in errors (`#[workload]` points at the declaration). The one sweep
    /// expansion: a list of more than one value names each workload `<name>_c<N>` or
    /// `<name>_r<RATE>`; a single value keeps the name.
    pub fn expand(&self, workloads: Vec<Workload>) -> Result<Vec<Workload>, String> {
        if !self.concurrency.is_empty() && !self.request_rates.is_empty() {
            return Err(
                "give --concurrency (closed loop) or --request-rate (open loop), not both".into(),
            );
        }
        if self.trace.is_some() {
            if self.sessions.is_some() {
                return Err("give --trace (replay) or --sessions (multi-turn), not both".into());
            }
            if !self.concurrency.is_empty() || !self.request_rates.is_empty() {
                return Err(
                    "a --trace sets when each request starts; drop --concurrency and --request-rate (speed it up or slow it down with --trace-speed)"
                        .into(),
                );
            }
            if self.num_requests.is_some() || self.prompts.is_some() {
                return Err(
                    "a --trace sets its requests and their prompts; drop --num-requests and --dataset (take a part of it with --trace-window)"
                        .into(),
                );
            }
        }
        self.check_open_loop()?;
        if self.sessions.is_some() && self.num_requests.is_some() {
            return Err(
                "a multi-turn run sends --sessions × --turns requests; drop --num-requests".into(),
            );
        }
        let mut shaped = Vec::new();
        for mut w in workloads {
            if let Some(n) = self.num_requests {
                w.num_requests = n;
            }
            if let Some(seed) = self.seed {
                w.seed = seed;
            }
            if self.goodput.is_some() {
                w.goodput = self.goodput;
            }
            if self.prompts.is_some() {
                w.prompts = self.prompts.clone();
            }
            if let Some(sessions) = &self.sessions {
                let mut sessions = sessions.clone();
                if sessions.user_tokens == 0 {
                    sessions.user_tokens = w.prompt_tokens;
                }
                w.set_sessions(sessions);
            }
            if let Some(trace) = &self.trace {
                w.set_trace(trace.clone());
            }
            w.shard = self.shard;
            if !self.percentiles.is_empty() {
                w.percentiles = self.percentiles.clone();
            }
            if let Some((strategy, start_rate, end_rate)) = self.ramp {
                w.arrival = Arrival::Ramp {
                    strategy,
                    start_rate,
                    end_rate,
                    burstiness: self.gaps(),
                };
            }
            if let Some(cap) = self.max_concurrency {
                match w.arrival {
                    // Without a rate over it, a closed loop runs at the cap, as --concurrency.
                    Arrival::Closed { .. } if self.request_rates.is_empty() => {
                        w.arrival = Arrival::Closed { concurrency: cap }
                    }
                    _ => w.max_concurrency = Some(cap),
                }
            }
            let sweep = self.concurrency.len() > 1 || self.request_rates.len() > 1;
            let name = |suffix: String| {
                if sweep {
                    format!("{}_{suffix}", w.name)
                } else {
                    w.name.clone()
                }
            };
            if self.concurrency.is_empty() && self.request_rates.is_empty() {
                shaped.push(w);
                continue;
            }
            for &concurrency in &self.concurrency {
                shaped.push(Workload {
                    name: name(format!("c{concurrency}")),
                    arrival: Arrival::Closed { concurrency },
                    ..w.clone()
                });
            }
            for &rate in &self.request_rates {
                let arrival = match self.gaps() {
                    Some(burstiness) if burstiness != 1.0 => Arrival::Gamma { rate, burstiness },
                    _ => self.arrival.at(rate),
                };
                shaped.push(Workload {
                    name: name(format!("r{}", rate_label(rate))),
                    arrival,
                    ..w.clone()
                });
            }
        }
        Ok(shaped)
    }
}

impl LoadShape {
    /// The open-loop gaps asked for: `None` for evenly spaced ones (`--arrival constant`),
    /// else the gamma shape (1, Poisson, unless `--burstiness` says otherwise).
    fn gaps(&self) -> Option<f64> {
        match self.arrival {
            OpenLoop::Constant => None,
            OpenLoop::Poisson => Some(self.burstiness.unwrap_or(1.0)),
        }
    }

    /// The rules between the cap, the burstiness, the ramp and the other load flags.
    fn check_open_loop(&self) -> Result<(), String> {
        if self.max_concurrency.is_some() && !self.concurrency.is_empty() {
            return Err(
                "give --concurrency (a closed loop of that many) or --max-concurrency (a cap over --request-rate; alone, the same as --concurrency), not both"
                    .into(),
            );
        }
        if let Some((_, start, end)) = self.ramp {
            if !self.request_rates.is_empty() || !self.concurrency.is_empty() {
                return Err(
                    "a ramp sets the rate from --ramp-up-start-rps to --ramp-up-end-rps; drop --request-rate and --concurrency"
                        .into(),
                );
            }
            if self.trace.is_some() {
                return Err(
                    "a --trace sets when each request starts; drop the --ramp-up-* flags".into(),
                );
            }
            for (flag, rate) in [("--ramp-up-start-rps", start), ("--ramp-up-end-rps", end)] {
                if !(rate.is_finite() && rate >= crate::workload::MIN_RATE) {
                    return Err(format!(
                        "{flag} must be requests per second of at least {}, not {rate}",
                        crate::workload::MIN_RATE
                    ));
                }
            }
        }
        if let Some(b) = self.burstiness {
            if self.request_rates.is_empty() && self.ramp.is_none() {
                return Err(
                    "--burstiness shapes the gaps of an open loop; give --request-rate R (or a --ramp-up-strategy) with it"
                        .into(),
                );
            }
            if self.arrival == OpenLoop::Constant {
                return Err(
                    "--burstiness shapes random gaps, and --arrival constant has none; drop one (--burstiness 1 is --arrival poisson)"
                        .into(),
                );
            }
            if !(b.is_finite() && b > 0.0) {
                return Err(format!(
                    "--burstiness must be above 0 (1 is Poisson, below 1 burstier, above 1 steadier), not {b}"
                ));
            }
        }
        Ok(())
    }
}

/// A rate as it appears in a workload name: the shortest decimal that reads back as the same
/// number, never an exponent (`2.5`, `10`, `0.000001`), so it is safe in a file name.
pub fn rate_label(rate: f64) -> String {
    // `Display` for f64 prints the shortest round-tripping digits and no exponent.
    format!("{rate}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(workloads: &[Workload]) -> Vec<&str> {
        workloads.iter().map(|w| w.name.as_str()).collect()
    }

    #[test]
    fn max_concurrency_caps_a_rate_and_alone_is_a_concurrency() {
        let alone = LoadShape {
            max_concurrency: Some(6),
            ..LoadShape::default()
        };
        let w = alone.apply(Workload::year1()).unwrap();
        assert!(w.iter().all(
            |w| w.arrival == Arrival::Closed { concurrency: 6 } && w.max_concurrency.is_none()
        ));
        let capped = LoadShape {
            max_concurrency: Some(3),
            request_rates: vec![2.0, 8.0],
            ..LoadShape::default()
        };
        let w = capped.apply(vec![Workload::short_input()]).unwrap();
        assert_eq!(names(&w), ["short_input_r2", "short_input_r8"]);
        assert_eq!(w[1].arrival, Arrival::Poisson { rate: 8.0 });
        assert!(w.iter().all(|w| w.max_concurrency == Some(3)));
        let both = LoadShape {
            max_concurrency: Some(3),
            concurrency: vec![2],
            ..LoadShape::default()
        };
        assert!(both
            .apply(Workload::year1())
            .unwrap_err()
            .contains("--max-concurrency"));
    }

    #[test]
    fn burstiness_and_ramps_set_the_arrival() {
        let bursty = LoadShape {
            request_rates: vec![4.0],
            burstiness: Some(0.5),
            ..LoadShape::default()
        };
        let w = bursty.apply(vec![Workload::short_input()]).unwrap();
        assert_eq!(
            w[0].arrival,
            Arrival::Gamma {
                rate: 4.0,
                burstiness: 0.5
            }
        );
        let poisson = LoadShape {
            burstiness: Some(1.0),
            ..bursty.clone()
        };
        let w = poisson.apply(vec![Workload::short_input()]).unwrap();
        assert_eq!(w[0].arrival, Arrival::Poisson { rate: 4.0 });
        let constant = LoadShape {
            arrival: OpenLoop::Constant,
            ..bursty.clone()
        };
        assert!(constant
            .apply(Workload::year1())
            .unwrap_err()
            .contains("--arrival constant"));
        let alone = LoadShape {
            burstiness: Some(0.5),
            ..LoadShape::default()
        };
        assert!(alone
            .apply(Workload::year1())
            .unwrap_err()
            .contains("--request-rate"));
        let ramp = LoadShape {
            ramp: Some((RampStrategy::Linear, 1.0, 5.0)),
            arrival: OpenLoop::Constant,
            max_concurrency: Some(2),
            ..LoadShape::default()
        };
        let w = ramp.apply(vec![Workload::stress_test()]).unwrap();
        assert_eq!(
            w[0].arrival,
            Arrival::Ramp {
                strategy: RampStrategy::Linear,
                start_rate: 1.0,
                end_rate: 5.0,
                burstiness: None
            }
        );
        assert_eq!(w[0].max_concurrency, Some(2));
        let ramp_and_rate = LoadShape {
            request_rates: vec![2.0],
            ..ramp
        };
        assert!(ramp_and_rate
            .apply(Workload::year1())
            .unwrap_err()
            .contains("--request-rate"));
    }

    #[test]
    fn a_concurrency_sweep_expands_each_workload_in_order() {
        let shape = LoadShape {
            concurrency: vec![1, 4, 16],
            num_requests: Some(8),
            seed: Some(3),
            ..LoadShape::default()
        };
        let w = shape
            .apply(vec![Workload::short_input(), Workload::long_input()])
            .unwrap();
        assert_eq!(
            names(&w),
            [
                "short_input_c1",
                "short_input_c4",
                "short_input_c16",
                "long_input_c1",
                "long_input_c4",
                "long_input_c16"
            ]
        );
        assert_eq!(w[2].arrival, Arrival::Closed { concurrency: 16 });
        assert!(w.iter().all(|w| w.num_requests == 8 && w.seed == 3));
        assert_eq!(w[3].prompt_tokens, 200);
    }

    #[test]
    fn a_rate_sweep_names_rates_and_keeps_the_spacing() {
        let shape = LoadShape {
            request_rates: vec![0.5, 2.5, 10.0],
            arrival: OpenLoop::Constant,
            ..LoadShape::default()
        };
        let w = shape.apply(vec![Workload::stress_test()]).unwrap();
        assert_eq!(
            names(&w),
            ["stress_test_r0.5", "stress_test_r2.5", "stress_test_r10"]
        );
        assert_eq!(w[1].arrival, Arrival::Constant { rate: 2.5 });
        assert_eq!(w[0].num_requests, 10);
    }

    #[test]
    fn one_value_keeps_the_name_as_the_harness_does() {
        let shape = LoadShape {
            request_rates: vec![3.0],
            ..LoadShape::default()
        };
        let w = shape.apply(vec![Workload::short_input()]).unwrap();
        assert_eq!(names(&w), ["short_input"]);
        assert_eq!(w[0].arrival, Arrival::Poisson { rate: 3.0 });
        let untouched = LoadShape::default()
            .apply(vec![Workload::stress_test()])
            .unwrap();
        assert_eq!(untouched, vec![Workload::stress_test()]);
    }

    #[test]
    fn both_lists_or_an_invalid_result_are_refused() {
        let both = LoadShape {
            concurrency: vec![2],
            request_rates: vec![2.0],
            ..LoadShape::default()
        };
        assert!(both
            .apply(vec![Workload::short_input()])
            .unwrap_err()
            .contains("not both"));
        let zero = LoadShape {
            concurrency: vec![0],
            ..LoadShape::default()
        };
        let err = zero.apply(vec![Workload::short_input()]).unwrap_err();
        assert!(
            err.contains("short_input") && err.contains("concurrency"),
            "{err}"
        );
    }

    #[test]
    fn rate_labels_are_plain_decimals() {
        assert_eq!(rate_label(2.5), "2.5");
        assert_eq!(rate_label(10.0), "10");
        assert_eq!(rate_label(1e-6), "0.000001");
        assert_eq!(rate_label(1e6), "1000000");
    }
}
