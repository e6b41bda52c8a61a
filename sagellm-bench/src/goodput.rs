//! Goodput: the requests that met every latency objective (SLO) given, per second of workload
//! wall time, as vLLM's `benchmark_serving --goodput` defines it. See `docs/METRICS.md`.
//!
//! Computed from per-request figures only ([`RequestLatency`]), so it does not depend on how
//! the records are stored.

use serde::{Deserialize, Serialize};

/// Latency objectives in milliseconds; a request meets an objective when its figure is at most
/// the limit. `None` sets no objective on that figure.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Slo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2el_ms: Option<f64>,
}

/// The figures of one request that objectives are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestLatency {
    pub success: bool,
    pub ttft_ms: Option<f64>,
    /// `None` for a request with one output token: it has no gap to time.
    pub tbt_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

/// A workload's goodput.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goodput {
    /// Requests that succeeded and met every objective.
    pub good_requests: u64,
    /// `good_requests` per second of workload wall time.
    pub request_goodput_rps: f64,
    /// `good_requests` over all measured requests (failed ones included).
    pub goodput_fraction: f64,
}

/// The keys `--goodput` accepts, each with what it limits.
pub const SLO_KEYS: &[(&str, &str)] = &[
    ("ttft", "time to first token"),
    ("tbt", "time between tokens (vLLM's tpot)"),
    ("e2el", "end-to-end latency"),
];

impl Slo {
    /// True when no objective is set.
    pub fn is_empty(&self) -> bool {
        *self == Slo::default()
    }

    /// Whether `request` succeeded and met every objective set. A request without a TBT (one
    /// output token) meets a TBT objective, as vLLM counts its TPOT as 0.
    pub fn met_by(&self, request: &RequestLatency) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>, absent_meets: bool| match limit {
            None => true,
            Some(limit) => value.map_or(absent_meets, |v| v <= limit),
        };
        request.success
            && within(self.ttft_ms, request.ttft_ms, false)
            && within(self.tbt_ms, request.tbt_ms, true)
            && within(self.e2el_ms, request.e2el_ms, false)
    }

    /// Parses `ttft:200,tbt:50,e2el:5000` (any subset, milliseconds; vLLM's space-separated
    /// form is accepted too).
    pub fn parse(text: &str) -> Result<Slo, String> {
        let mut slo = Slo::default();
        let keys = SLO_KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ");
        for item in text.split([',', ' ']).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once(':').ok_or_else(|| {
                format!("`{item}` must be KEY:MILLISECONDS, e.g. ttft:200,tbt:50,e2el:5000")
            })?;
            let ms = match value.trim().parse::<f64>() {
                Ok(ms) if ms.is_finite() && ms > 0.0 => ms,
                _ => {
                    return Err(format!(
                        "`{item}`: the limit must be a positive number of milliseconds"
                    ))
                }
            };
            let slot = match key.trim() {
                "ttft" => &mut slo.ttft_ms,
                "tbt" => &mut slo.tbt_ms,
                "e2el" => &mut slo.e2el_ms,
                "tpot" => {
                    return Err(
                        "`tpot` here is e2el/n; the objective vLLM calls tpot is our time between tokens: use tbt:MS"
                            .to_string(),
                    )
                }
                other => return Err(format!("unknown objective `{other}`; use {keys}")),
            };
            if slot.replace(ms).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        if slo.is_empty() {
            return Err(format!(
                "no objective given; use KEY:MILLISECONDS with KEY one of {keys}, e.g. ttft:200,e2el:5000"
            ));
        }
        Ok(slo)
    }
}

/// The goodput of a workload whose requests had `latencies`, over `wall_time_s` seconds.
pub fn goodput(
    slo: &Slo,
    latencies: impl IntoIterator<Item = RequestLatency>,
    wall_time_s: f64,
) -> Goodput {
    let (mut good, mut total) = (0u64, 0u64);
    for request in latencies {
        total += 1;
        good += u64::from(slo.met_by(&request));
    }
    let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
    Goodput {
        good_requests: good,
        request_goodput_rps: ratio(good as f64, wall_time_s),
        goodput_fraction: ratio(good as f64, total as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ttft: f64, tbt: Option<f64>, e2el: f64) -> RequestLatency {
        RequestLatency {
            success: true,
            ttft_ms: Some(ttft),
            tbt_ms: tbt,
            e2el_ms: Some(e2el),
        }
    }

    #[test]
    fn goodput_by_hand() {
        // SLO: TTFT <= 100, TBT <= 20.
        // A (50, 10, 500) meets both; B (100, 20, 900) meets both at the limits;
        // C (150, 10, 600) misses TTFT; D (80, 25, 700) misses TBT; E (60, none, 60) has one
        // token and meets; F failed with fine latencies: not good.
        let slo = Slo {
            ttft_ms: Some(100.0),
            tbt_ms: Some(20.0),
            e2el_ms: None,
        };
        let mut failed = ok(10.0, Some(5.0), 100.0);
        failed.success = false;
        let requests = [
            ok(50.0, Some(10.0), 500.0),
            ok(100.0, Some(20.0), 900.0),
            ok(150.0, Some(10.0), 600.0),
            ok(80.0, Some(25.0), 700.0),
            ok(60.0, None, 60.0),
            failed,
        ];
        // 3 good of 6, over 2 s of wall time: 1.5 req/s, fraction 0.5.
        let g = goodput(&slo, requests, 2.0);
        assert_eq!(g.good_requests, 3);
        assert_eq!(g.request_goodput_rps, 1.5);
        assert_eq!(g.goodput_fraction, 0.5);
        // Adding E2E <= 650 drops B (900): 2 good.
        let tighter = Slo {
            e2el_ms: Some(650.0),
            ..slo
        };
        assert_eq!(goodput(&tighter, requests, 2.0).good_requests, 2);
    }

    #[test]
    fn empty_workload_gives_zeros() {
        let g = goodput(&Slo::parse("ttft:1").unwrap(), [], 0.0);
        assert_eq!(
            (g.good_requests, g.request_goodput_rps, g.goodput_fraction),
            (0, 0.0, 0.0)
        );
    }

    #[test]
    fn parses_any_subset_and_refuses_bad_items() {
        assert_eq!(
            Slo::parse("ttft:200,tbt:50,e2el:5000").unwrap(),
            Slo {
                ttft_ms: Some(200.0),
                tbt_ms: Some(50.0),
                e2el_ms: Some(5000.0)
            }
        );
        assert_eq!(
            Slo::parse("e2el:1.5").unwrap(),
            Slo {
                e2el_ms: Some(1.5),
                ..Slo::default()
            }
        );
        assert_eq!(
            Slo::parse("ttft:200 tbt:50").unwrap(),
            Slo::parse("ttft:200,tbt:50").unwrap()
        );
        for (bad, words) in [
            ("", "no objective"),
            ("ttft", "KEY:MILLISECONDS"),
            ("ttft:0", "positive number"),
            ("ttft:-5", "positive number"),
            ("ttft:soon", "positive number"),
            ("ttft:NaN", "positive number"),
            ("itl:5", "unknown objective `itl`"),
            ("tpot:5", "use tbt:MS"),
            ("ttft:5,ttft:6", "given twice"),
        ] {
            let err = Slo::parse(bad).unwrap_err();
            assert!(err.contains(words), "{bad}: {err}");
        }
    }
}
