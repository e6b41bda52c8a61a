//! Several runs side by side: `comparison.json` and `comparison.md`.
//!
//! Each compared metric lists every target's value and its relative difference to the first
//! target (`(value - first) / first`, `null` when the first is 0). The fastest target of a
//! workload is the one with the lowest mean end-to-end latency among targets that completed at
//! least one request; overall, the one with the lowest sum of those means over the workloads
//! every target ran. A metric some target lacks (goodput, measured only against objectives) is
//! left out of that workload's comparison.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::report::files::write_atomically;
use crate::report::names::{COMPARISON_JSON, COMPARISON_MD};
use crate::report::ReportError;
use crate::results::catalogue::{Metric, METRICS};
use crate::results::summary::Summary;

pub use crate::results::catalogue::Better;

/// The metrics compared: the catalogue's entries marked so, in its order.
fn compared() -> impl Iterator<Item = &'static Metric> {
    METRICS.iter().filter(|m| m.compared)
}

/// The whole comparison, as written to `comparison.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub schema_version: u32,
    /// Target names in order; relative differences are to the first.
    pub targets: Vec<String>,
    /// Where each target's results came from (a URL or a results folder).
    pub sources: IndexMap<String, String>,
    /// The target with the lowest summed mean E2E latency over the common workloads.
    pub fastest: Option<String>,
    pub workloads: IndexMap<String, WorkloadComparison>,
}

/// One workload across the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadComparison {
    /// The target with the lowest mean E2E latency (among those with a successful request).
    pub fastest: Option<String>,
    pub metrics: IndexMap<String, MetricComparison>,
}

/// One metric across the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    pub better: Better,
    pub values: IndexMap<String, f64>,
    /// `(value - first) / first` per target; `None` when the first target's value is 0.
    pub relative_to_first: IndexMap<String, Option<f64>>,
}

impl Comparison {
    /// Compares `runs` (name, source, summary) over the workloads they all ran.
    pub fn new(runs: &[(String, String, Summary)]) -> Comparison {
        let targets: Vec<String> = runs.iter().map(|(n, _, _)| n.clone()).collect();
        let common: Vec<String> = match runs.first() {
            None => Vec::new(),
            Some((_, _, first)) => first
                .workloads
                .keys()
                .filter(|w| runs.iter().all(|(_, _, s)| s.workloads.contains_key(*w)))
                .cloned()
                .collect(),
        };
        let mut workloads = IndexMap::new();
        let mut e2e_sums: IndexMap<String, Option<f64>> =
            targets.iter().map(|t| (t.clone(), Some(0.0))).collect();
        for workload in &common {
            let of = |i: usize| &runs[i].2.workloads[workload];
            let mut metrics = IndexMap::new();
            for metric in compared() {
                let field = |i: usize| (metric.value)(of(i));
                // A metric some run lacks (goodput without objectives) is left out, not zeroed.
                if (0..targets.len()).any(|i| field(i).is_none()) {
                    continue;
                }
                let mut row = MetricComparison {
                    better: metric.better,
                    values: IndexMap::new(),
                    relative_to_first: IndexMap::new(),
                };
                let first = field(0).unwrap_or(0.0);
                for (i, target) in targets.iter().enumerate() {
                    let v = field(i).unwrap_or(0.0);
                    row.values.insert(target.clone(), v);
                    row.relative_to_first
                        .insert(target.clone(), (first != 0.0).then(|| (v - first) / first));
                }
                metrics.insert(metric.key.to_string(), row);
            }
            let mut fastest: Option<(String, f64)> = None;
            for (i, target) in targets.iter().enumerate() {
                let ok = of(i).successful_requests > 0;
                let e2e = of(i).avg_e2el_ms;
                let sum = e2e_sums.get_mut(target).expect("every target has a sum");
                *sum = if ok { sum.map(|s| s + e2e) } else { None };
                if ok && fastest.as_ref().map_or(true, |(_, best)| e2e < *best) {
                    fastest = Some((target.clone(), e2e));
                }
            }
            workloads.insert(
                workload.clone(),
                WorkloadComparison {
                    fastest: fastest.map(|(t, _)| t),
                    metrics,
                },
            );
        }
        let fastest = if common.is_empty() {
            None
        } else {
            e2e_sums
                .iter()
                .filter_map(|(t, s)| s.map(|s| (t, s)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(t, _)| t.clone())
        };
        Comparison {
            schema_version: crate::results::metrics::SCHEMA_VERSION,
            targets,
            sources: runs
                .iter()
                .map(|(n, src, _)| (n.clone(), src.clone()))
                .collect(),
            fastest,
            workloads,
        }
    }

    /// GitHub-flavoured markdown: one table per workload, values and relative differences.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("# Comparison\n\n");
        for (t, src) in &self.sources {
            md.push_str(&format!("- **{t}**: {src}\n"));
        }
        match &self.fastest {
            Some(f) => md.push_str(&format!(
                "\nFastest overall (lowest mean end-to-end latency): **{f}**\n"
            )),
            None => md.push_str("\nNo workload completed on every target.\n"),
        }
        for (name, w) in &self.workloads {
            md.push_str(&format!("\n## {name}\n\n"));
            if let Some(f) = &w.fastest {
                md.push_str(&format!("Fastest: **{f}**\n\n"));
            }
            md.push_str("| Metric |");
            for (i, t) in self.targets.iter().enumerate() {
                if i == 0 {
                    md.push_str(&format!(" {t} |"));
                } else {
                    md.push_str(&format!(" {t} | vs {} |", self.targets[0]));
                }
            }
            md.push_str("\n|---|");
            for i in 0..self.targets.len() {
                md.push_str(if i == 0 { "---:|" } else { "---:|---:|" });
            }
            md.push('\n');
            for metric in compared() {
                let Some(row) = w.metrics.get(metric.key) else {
                    continue;
                };
                md.push_str(&format!("| {} |", metric.label_with_unit()));
                for (i, t) in self.targets.iter().enumerate() {
                    let v = row.values.get(t).copied().unwrap_or(0.0);
                    md.push_str(&format!(" {v:.2} |"));
                    if i > 0 {
                        match row.relative_to_first.get(t).copied().flatten() {
                            Some(r) => md.push_str(&format!(" {:+.1}% |", r * 100.0)),
                            None => md.push_str(" n/a |"),
                        }
                    }
                }
                md.push('\n');
            }
        }
        md
    }

    /// Writes `comparison.json` and `comparison.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        crate::report::files::prepare_dir(dir)?;
        crate::report::files::write_json(&dir.join(COMPARISON_JSON), self)?;
        write_atomically(&dir.join(COMPARISON_MD), self.to_markdown().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EngineFigures;
    use crate::results::metrics::{aggregate, WallClock};
    use crate::results::record::{RawRequest, RequestRecord};
    use crate::results::summary::Provenance;

    fn summary(e2e: f64) -> Summary {
        let record = RequestRecord::new(RawRequest {
            prompt_tokens: 4,
            token_times_ms: vec![e2e / 2.0, e2e],
            token_counts: vec![1, 1],
            finish_ms: e2e,
            ..RawRequest::default()
        });
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: e2e / 1000.0,
        };
        let metrics = aggregate(
            "w",
            "openai",
            "m",
            &[record],
            wall,
            &EngineFigures::default(),
        );
        let mut s = Summary::new(Provenance::now("openai", "m", serde_json::Value::Null), &[]);
        s.workloads.insert("w".into(), metrics);
        s
    }

    #[test]
    fn names_the_faster_target_and_relative_differences() {
        let runs = vec![
            ("slow".to_string(), "a".to_string(), summary(100.0)),
            ("fast".to_string(), "b".to_string(), summary(50.0)),
        ];
        let c = Comparison::new(&runs);
        assert_eq!(c.fastest.as_deref(), Some("fast"));
        let w = &c.workloads["w"];
        assert_eq!(w.fastest.as_deref(), Some("fast"));
        let e2e = &w.metrics["avg_e2el_ms"];
        assert_eq!(e2e.relative_to_first["fast"], Some(-0.5));
        assert_eq!(e2e.relative_to_first["slow"], Some(0.0));
        let md = c.to_markdown();
        assert!(md.contains("**fast**") && md.contains("-50.0%"), "{md}");
        assert!(!w.metrics.contains_key("request_goodput_rps"));
    }

    #[test]
    fn goodput_is_compared_when_every_run_measured_it() {
        let slo = crate::workload::slo::Slo::parse("e2el:60").unwrap();
        let mut runs = Vec::new();
        for (name, e2e) in [("slow", 100.0), ("fast", 50.0)] {
            let mut s = summary(e2e);
            let m = s.workloads.get_mut("w").unwrap();
            // One request: it meets e2el <= 60 only on `fast`, whose wall time is 0.05 s.
            m.set_goodput(
                &slo,
                [crate::results::goodput::RequestLatency {
                    success: true,
                    ttft_ms: Some(e2e / 2.0),
                    tbt_ms: Some(e2e / 2.0),
                    e2el_ms: Some(e2e),
                }],
            );
            runs.push((name.to_string(), name.to_string(), s));
        }
        let c = Comparison::new(&runs);
        let g = &c.workloads["w"].metrics["request_goodput_rps"];
        assert_eq!(g.values["slow"], 0.0);
        assert_eq!(g.values["fast"], 20.0);
        assert_eq!(
            c.workloads["w"].metrics["goodput_fraction"].values["fast"],
            1.0
        );
        assert!(c.to_markdown().contains("| Goodput (req/s) |"));
    }
}
