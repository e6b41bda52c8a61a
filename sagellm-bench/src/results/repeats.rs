//! Repeated runs (`--num-runs N`): every figure of the table, per workload, over the N runs:
//! its mean, a Student-t confidence interval for that mean, and its coefficient of variation,
//! with figures whose CV is above a bound flagged as noisy. See docs/METRICS.md, "Repeated
//! runs".
//!
//! Each run is one value: the interval is over runs, not over the pooled requests, so it
//! carries what varies between runs (the engine's state, the machine's other load) and not
//! only the spread of requests within one run.

use serde::{Deserialize, Serialize};

use crate::results::catalogue::{Row, METRICS};
use crate::results::metrics::WorkloadMetrics;
use crate::results::summary::Summary;

/// The confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// The coefficient of variation above which a figure is flagged as noisy, unless the run sets
/// its own (`--cv-bound`).
pub const DEFAULT_CV_BOUND: f64 = 0.05;

/// The 97.5th percentile of Student's t distribution with `df` degrees of freedom: the
/// half-width factor of a two-sided 95% interval. Exact (to 9 digits) up to 30 degrees of
/// freedom; beyond, the Cornish-Fisher expansion in 1/df around the normal quantile, within
/// 1e-5 of the exact value from 31 on. `df` 0 has no interval (infinite).
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706204736,
        4.302652730,
        3.182446305,
        2.776445105,
        2.570581836,
        2.446911851,
        2.364624252,
        2.306004135,
        2.262157163,
        2.228138852,
        2.200985160,
        2.178812830,
        2.160368656,
        2.144786688,
        2.131449546,
        2.119905299,
        2.109815578,
        2.100922040,
        2.093024054,
        2.085963447,
        2.079613845,
        2.073873068,
        2.068657610,
        2.063898562,
        2.059538553,
        2.055529439,
        2.051830516,
        2.048407142,
        2.045229642,
        2.042272456,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => TABLE[df - 1],
        _ => {
            let z: f64 = 1.959963985;
            let n = df as f64;
            let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
            z + (z3 + z) / (4.0 * n)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n.powi(3))
        }
    }
}

/// The spread of one figure over runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Its value in each run, in run order.
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation over runs (`n - 1` in the denominator); 0 for one run.
    pub std: f64,
    /// The 95% confidence interval of the mean, `mean ± t(0.975, n - 1) × std / sqrt(n)`;
    /// absent for one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<(f64, f64)>,
    /// Coefficient of variation, `std / |mean|`; absent when the mean is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<f64>,
    /// True when `cv` is above the bound.
    pub noisy: bool,
}

impl Spread {
    /// The spread of `values` (at least one), flagged noisy above `cv_bound`.
    pub fn of(values: &[f64], cv_bound: f64) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let ci = (values.len() > 1).then(|| {
            let half = t_975(values.len() - 1) * std / n.sqrt();
            (mean - half, mean + half)
        });
        let cv = (mean != 0.0).then(|| std / mean.abs());
        Spread {
            values: values.to_vec(),
            mean,
            std,
            ci,
            cv,
            noisy: cv.is_some_and(|cv| cv > cv_bound),
        }
    }
}

/// One figure of a workload over the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpread {
    /// The field of `<workload>_metrics.json`.
    pub metric: String,
    /// Its name with its unit, e.g. "TTFT p99 (ms)".
    pub label: String,
    #[serde(flatten)]
    pub spread: Spread,
}

/// Every figure of one workload over the runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadRepeats {
    pub workload: String,
    pub metrics: Vec<MetricSpread>,
}

impl WorkloadRepeats {
    /// The figure stored in field `key`, if every run had it.
    pub fn metric(&self, key: &str) -> Option<&MetricSpread> {
        self.metrics.iter().find(|m| m.metric == key)
    }
}

/// A repeated run's summary: `repeats.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatSummary {
    /// Runs asked for.
    pub requested_runs: usize,
    /// Runs that completed, and that the figures are over.
    pub runs: usize,
    /// Each completed run's folder, relative to the repeated run's.
    pub run_folders: Vec<String>,
    pub confidence: f64,
    pub cv_bound: f64,
    /// False when the repetitions stopped early (see `stopped`).
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    pub workloads: Vec<WorkloadRepeats>,
}

impl RepeatSummary {
    /// The spreads over `runs` (completed runs' summaries, each with its folder name), for
    /// every figure of the table that every run measured.
    pub fn of(runs: &[(String, Summary)], requested_runs: usize, cv_bound: f64) -> Self {
        let mut workloads = Vec::new();
        if let Some((_, first)) = runs.first() {
            for name in first.workloads.keys() {
                let per_run: Vec<&WorkloadMetrics> = runs
                    .iter()
                    .filter_map(|(_, s)| s.workloads.get(name))
                    .collect();
                if per_run.len() != runs.len() {
                    continue;
                }
                workloads.push(WorkloadRepeats {
                    workload: name.clone(),
                    metrics: spreads(&per_run, cv_bound),
                });
            }
        }
        RepeatSummary {
            requested_runs,
            runs: runs.len(),
            run_folders: runs.iter().map(|(folder, _)| folder.clone()).collect(),
            confidence: CONFIDENCE,
            cv_bound,
            complete: runs.len() == requested_runs,
            stopped: None,
            workloads,
        }
    }

    /// The noisy figures, as `workload: label (CV 7.1%)`.
    pub fn noisy(&self) -> Vec<String> {
        self.workloads
            .iter()
            .flat_map(|w| {
                w.metrics.iter().filter(|m| m.spread.noisy).map(|m| {
                    format!(
                        "{}: {} (CV {:.1}%)",
                        w.workload,
                        m.label,
                        m.spread.cv.unwrap_or(0.0) * 100.0
                    )
                })
            })
            .collect()
    }
}

/// Where the steady window lies is no figure of the engine's speed: left out of the spreads.
const WINDOW_BOUNDS: [&str; 2] = ["steady_start_ms", "steady_end_ms"];

/// The spread of every table figure present in all of `per_run`.
fn spreads(per_run: &[&WorkloadMetrics], cv_bound: f64) -> Vec<MetricSpread> {
    METRICS
        .iter()
        .filter(|m| m.row != Row::None && !WINDOW_BOUNDS.contains(&m.key))
        .filter_map(|m| {
            let values: Option<Vec<f64>> = per_run.iter().map(|r| m.measured(r)).collect();
            let values = values.filter(|v| !v.is_empty())?;
            Some(MetricSpread {
                metric: m.key.to_string(),
                label: m.label_with_unit(),
                spread: Spread::of(&values, cv_bound),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * (1.0 + b.abs())
    }

    #[test]
    fn the_interval_and_cv_of_five_runs_by_hand() {
        // 10, 12, 14, 16, 18: mean 14; squared deviations 16 + 4 + 0 + 4 + 16 = 40, over
        // n - 1 = 4: variance 10, std sqrt(10) = 3.16227766. Standard error sqrt(10 / 5) =
        // sqrt(2) = 1.41421356; t(0.975, 4) = 2.776445105: half-width 3.92649459, interval
        // [10.07350541, 17.92649459]. CV 3.16227766 / 14 = 0.22587698.
        let s = Spread::of(&[10.0, 12.0, 14.0, 16.0, 18.0], 0.05);
        assert_eq!(s.mean, 14.0);
        assert!(close(s.std, 3.16227766));
        let (lo, hi) = s.ci.unwrap();
        assert!(close(lo, 10.07350541), "{lo}");
        assert!(close(hi, 17.92649459), "{hi}");
        assert!(close(s.cv.unwrap(), 0.22587698));
        assert!(s.noisy);
        // Two runs, 99 and 101: std sqrt(2), t(0.975, 1) = 12.706204736, half-width 12.706...
        // x sqrt(2) / sqrt(2) = 12.706204736. CV sqrt(2) / 100 = 1.41%: not noisy at 5%.
        let s = Spread::of(&[99.0, 101.0], 0.05);
        let (lo, hi) = s.ci.unwrap();
        assert!(close(lo, 100.0 - 12.706204736) && close(hi, 100.0 + 12.706204736));
        assert!(close(s.cv.unwrap(), 0.0141421356));
        assert!(!s.noisy);
    }

    #[test]
    fn one_run_has_no_interval_and_a_zero_mean_no_cv() {
        let s = Spread::of(&[5.0], 0.05);
        assert_eq!((s.std, s.ci, s.cv, s.noisy), (0.0, None, Some(0.0), false));
        let s = Spread::of(&[0.0, 0.0, 0.0], 0.05);
        assert_eq!((s.cv, s.noisy), (None, false));
        assert_eq!(s.ci, Some((0.0, 0.0)));
    }

    #[test]
    fn t_quantiles_match_the_tables_and_approach_the_normal() {
        assert_eq!(t_975(1), 12.706204736);
        assert_eq!(t_975(4), 2.776445105);
        assert_eq!(t_975(30), 2.042272456);
        // Published values: df 40: 2.021075390, df 60: 2.000297822, df 120: 1.979930405.
        assert!((t_975(40) - 2.021075390).abs() < 1e-5, "{}", t_975(40));
        assert!((t_975(60) - 2.000297822).abs() < 1e-5, "{}", t_975(60));
        assert!((t_975(120) - 1.979930405).abs() < 1e-5, "{}", t_975(120));
        assert!(t_975(31) < t_975(30) && t_975(31) > t_975(32));
        assert!(t_975(0).is_infinite());
    }
}
