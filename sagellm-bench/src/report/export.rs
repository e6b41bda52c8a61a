//! A run's figures in the formats CI tools read directly: Bencher's Metric Format (BMF) JSON,
//! github-action-benchmark's `customSmallerIsBetter` and `customBiggerIsBetter` JSON, and a
//! GitHub job summary (markdown). Every figure comes from the metric catalogue, with its unit
//! and its better direction.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::results::catalogue::{Better, Unit, METRICS};
use crate::results::metrics::WorkloadMetrics;
use crate::results::summary::Summary;

/// The latency distributions a BMF file gives as Bencher's built-in `latency` measure
/// (nanoseconds): the mean as the value, the median and the p99 as the lower and upper values.
const LATENCIES: [(&str, MeanP50P99); 4] = [
    ("ttft", |m| [m.avg_ttft_ms, m.p50_ttft_ms, m.p99_ttft_ms]),
    ("tpot", |m| [m.avg_tpot_ms, m.p50_tpot_ms, m.p99_tpot_ms]),
    ("itl", |m| [m.avg_itl_ms, m.p50_itl_ms, m.p99_itl_ms]),
    ("e2el", |m| [m.avg_e2el_ms, m.p50_e2el_ms, m.p99_e2el_ms]),
];

/// A distribution's mean, median and p99, in milliseconds.
type MeanP50P99 = fn(&WorkloadMetrics) -> [f64; 3];

const NS_PER_MS: f64 = 1e6;

/// Bencher Metric Format JSON: per workload, `<workload>/<latency>` benchmarks with the built-in
/// `latency` measure (ns; value the mean, lower_value the p50, upper_value the p99),
/// `<workload>/output_tokens` and `<workload>/requests` with the built-in `throughput` measure
/// (per second), and `<workload>` with one measure per other figure of the catalogue, named by
/// its key (e.g. `error_rate`, `peak_mem_mb`), for the figures the workload has.
pub fn bencher(summary: &Summary) -> Value {
    let mut benchmarks = Map::new();
    for (name, m) in &summary.workloads {
        for (slug, values) in LATENCIES {
            let [mean, p50, p99] = values(m);
            benchmarks.insert(
                format!("{name}/{slug}"),
                json!({ "latency": {
                    "value": mean * NS_PER_MS,
                    "lower_value": p50 * NS_PER_MS,
                    "upper_value": p99 * NS_PER_MS,
                } }),
            );
        }
        for (slug, value) in [
            ("output_tokens", m.output_throughput_tps),
            ("requests", m.request_throughput_rps),
        ] {
            benchmarks.insert(
                format!("{name}/{slug}"),
                json!({ "throughput": { "value": value } }),
            );
        }
        let measures: Map<String, Value> = METRICS
            .iter()
            .filter_map(|metric| {
                let value = (metric.value)(m)?;
                Some((metric.key.to_string(), json!({ "value": value })))
            })
            .collect();
        benchmarks.insert(name.clone(), Value::Object(measures));
    }
    Value::Object(benchmarks)
}

/// One entry of github-action-benchmark's custom JSON formats.
#[derive(Debug, Serialize, PartialEq)]
pub struct GithubBenchmark {
    /// `<workload> <label>`, e.g. `short_input TTFT p99`.
    pub name: String,
    pub unit: String,
    pub value: f64,
}

/// The catalogue's figures whose better direction is `better`, for every workload that has
/// them: the `customSmallerIsBetter` (`Better::Lower`) or `customBiggerIsBetter`
/// (`Better::Higher`) input of github-action-benchmark. Fractions are in percent and bytes in
/// MiB, as the table shows them.
pub fn github_benchmark(summary: &Summary, better: Better) -> Vec<GithubBenchmark> {
    let mut entries = Vec::new();
    for (name, m) in &summary.workloads {
        for metric in METRICS.iter().filter(|metric| metric.better == better) {
            let Some(value) = (metric.value)(m) else {
                continue;
            };
            let unit = match metric.unit {
                Unit::Count => "count".to_string(),
                other => other.axis().to_string(),
            };
            entries.push(GithubBenchmark {
                name: format!("{name} {} ({})", metric.label, metric.key),
                unit,
                value: metric.unit.shown(value),
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EngineFigures;
    use crate::results::metrics::{aggregate, WallClock};
    use crate::results::record::{RawRequest, RequestRecord};
    use crate::results::summary::{Provenance, Summary};

    /// One workload of two requests: TTFT 10 and 30 ms, four tokens 10 ms apart each.
    fn summary() -> Summary {
        let record = |index: usize, first: f64| {
            RequestRecord::new(RawRequest {
                index,
                start_ms: index as f64 * 100.0,
                prompt_tokens: 8,
                token_times_ms: vec![first, first + 10.0, first + 20.0, first + 30.0],
                token_counts: vec![1, 1, 1, 1],
                finish_ms: first + 30.0,
                ..RawRequest::default()
            })
        };
        let records = [record(0, 10.0), record(1, 30.0)];
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 0.16,
        };
        let metrics = aggregate("w", "mock", "m", &records, wall, &EngineFigures::default());
        let provenance = Provenance::now("mock", "m", Value::Null);
        Summary::from_metrics(
            provenance,
            [("w".to_string(), metrics)].into_iter().collect(),
        )
    }

    #[test]
    fn bencher_gives_latencies_in_nanoseconds_with_their_median_and_p99() {
        let bmf = bencher(&summary());
        let ttft = &bmf["w/ttft"]["latency"];
        // Mean of 10 and 30 ms; the median of two is their mean; p99 interpolates near 30.
        assert_eq!(ttft["value"], 20.0e6);
        assert_eq!(ttft["lower_value"], 20.0e6);
        assert!((ttft["upper_value"].as_f64().unwrap() - 29.8e6).abs() < 1.0);
        assert_eq!(bmf["w/itl"]["latency"]["value"], 10.0e6);
        // Eight tokens over the workload's 0.16 s.
        assert_eq!(bmf["w/output_tokens"]["throughput"]["value"], 50.0);
        assert_eq!(bmf["w"]["error_rate"]["value"], 0.0);
        assert_eq!(bmf["w"]["successful_requests"]["value"], 2.0);
        // Figures the run does not have are left out, not zeroed.
        assert!(bmf["w"].get("request_goodput_rps").is_none());
        // The documented shape: every measure an object with a numeric `value`.
        for (_, measures) in bmf.as_object().unwrap() {
            for (_, measure) in measures.as_object().unwrap() {
                assert!(measure["value"].is_number(), "{measure}");
            }
        }
    }

    #[test]
    fn github_entries_split_by_direction_in_the_units_the_table_shows() {
        let s = summary();
        let smaller = github_benchmark(&s, Better::Lower);
        let bigger = github_benchmark(&s, Better::Higher);
        let find = |entries: &[GithubBenchmark], key: &str| {
            entries
                .iter()
                .find(|e| e.name.ends_with(&format!("({key})")))
                .map(|e| (e.unit.clone(), e.value))
        };
        assert_eq!(find(&smaller, "avg_ttft_ms"), Some(("ms".into(), 20.0)));
        assert_eq!(find(&smaller, "error_rate"), Some(("%".into(), 0.0)));
        assert_eq!(
            find(&bigger, "output_throughput_tps"),
            Some(("tokens/s".into(), 50.0))
        );
        assert_eq!(find(&bigger, "avg_ttft_ms"), None);
        assert_eq!(find(&smaller, "output_throughput_tps"), None);
        assert!(smaller.iter().all(|e| e.name.starts_with("w ")));
    }
}
