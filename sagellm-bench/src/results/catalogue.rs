//! The one list of the figures a workload's summary shows: what each is called, its unit,
//! which way is better, and where it appears (the table, markdown and HTML rows, `compare`,
//! the baseline verdicts, the key-metrics chart). Every view reads this list, so a figure is
//! added, renamed or re-ordered here, once.
//!
//! Each entry names a field of [`WorkloadMetrics`] (the `metric!` macro turns the field into the
//! entry's key and its accessor, so a key can never drift from the JSON field it reads).

use serde::{Deserialize, Serialize};

use crate::backend::FigureSource;
use crate::results::metrics::WorkloadMetrics;
use crate::results::samples::RequestSample;

/// Whether a smaller or a larger value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// What a figure counts, which decides how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A whole number: requests, tokens, blocks, connections.
    Count,
    /// A share in [0, 1], written as a percentage.
    Fraction,
    Milliseconds,
    Seconds,
    TokensPerSecond,
    RequestsPerSecond,
    Megabytes,
    /// Bytes, written as megabytes (MiB).
    Bytes,
}

impl Unit {
    /// The unit as a label's suffix shows it, e.g. "ms" in "TTFT avg (ms)"; none for counts and
    /// fractions.
    pub(crate) fn suffix(self) -> Option<&'static str> {
        match self {
            Unit::Count | Unit::Fraction => None,
            Unit::Milliseconds => Some("ms"),
            Unit::Seconds => Some("s"),
            Unit::TokensPerSecond => Some("tok/s"),
            Unit::RequestsPerSecond => Some("req/s"),
            Unit::Megabytes | Unit::Bytes => Some("MB"),
        }
    }

    /// The unit on a chart's axis, where there is room to spell it out.
    #[cfg_attr(not(feature = "charts"), allow(dead_code))]
    pub(crate) fn axis(self) -> &'static str {
        match self {
            Unit::Fraction => "%",
            Unit::TokensPerSecond => "tokens/s",
            other => other.suffix().unwrap_or(""),
        }
    }

    /// The value in the unit it is shown in: fractions as percent, bytes as MiB.
    pub(crate) fn shown(self, value: f64) -> f64 {
        match self {
            Unit::Fraction => value * 100.0,
            Unit::Bytes => value / (1024.0 * 1024.0),
            _ => value,
        }
    }

    /// The value as the table, markdown and HTML write it.
    pub(crate) fn format(self, value: f64) -> String {
        let shown = self.shown(value);
        match self {
            Unit::Count => format!("{}", shown.round() as u64),
            Unit::Fraction => format!("{shown:.1}%"),
            Unit::Milliseconds | Unit::TokensPerSecond => format!("{shown:.2}"),
            Unit::Seconds | Unit::RequestsPerSecond => format!("{shown:.3}"),
            Unit::Megabytes | Unit::Bytes => format!("{shown:.1}"),
        }
    }
}

/// Where a figure sits in the summary table (and its markdown and HTML copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    /// Not in the table.
    None,
    /// Opens a row with this label.
    Starts(&'static str),
    /// Joins the row opened by the closest entry above, after a " / ".
    Joins,
}

/// The group of engine figures a metric belongs to, whose source says whether the backend
/// gave it at all (the metrics file writes an unavailable figure as 0, with its source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Memory,
    KvCache,
    Speculative,
}

impl Group {
    fn source(self, metrics: &WorkloadMetrics) -> FigureSource {
        match self {
            Group::Memory => metrics.sources.memory,
            Group::KvCache => metrics.sources.kv_cache,
            Group::Speculative => metrics.sources.speculative,
        }
    }
}

/// A statistic of per-request values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Mean,
    P50,
    P99,
}

/// How a figure is compared against a baseline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Basis {
    /// One value per successful request, through a statistic: bootstrapped.
    PerRequest {
        values: fn(&RequestSample) -> Option<f64>,
        stat: Stat,
    },
    /// One 0/1 value per request, its failure; the statistic is the mean (the error rate).
    Failures,
    /// The run's single figure.
    Single,
}

/// One figure of a workload's summary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    /// The field of `<workload>_metrics.json` it reads, and its key in `comparison.json`.
    pub key: &'static str,
    /// Its name without the unit, e.g. "TTFT p99".
    pub label: &'static str,
    pub unit: Unit,
    pub better: Better,
    /// Its value in a workload's metrics; `None` where the backend does not give it.
    pub value: fn(&WorkloadMetrics) -> Option<f64>,
    pub row: Row,
    /// Compared across targets by `compare`.
    pub compared: bool,
    /// Compared against a saved baseline by `cargo bench`, and how.
    pub baseline: Option<Basis>,
    /// The panel of the key-metrics chart it is a bar of.
    #[cfg_attr(not(feature = "charts"), allow(dead_code))]
    pub panel: Option<&'static str>,
    /// The engine figures it is one of, if it is.
    pub group: Option<Group>,
}

impl Metric {
    const fn new(
        key: &'static str,
        label: &'static str,
        unit: Unit,
        better: Better,
        value: fn(&WorkloadMetrics) -> Option<f64>,
    ) -> Metric {
        Metric {
            key,
            label,
            unit,
            better,
            value,
            row: Row::None,
            compared: false,
            baseline: None,
            panel: None,
            group: None,
        }
    }

    const fn of(self, group: Group) -> Metric {
        Metric {
            group: Some(group),
            ..self
        }
    }

    /// False when the backend does not give this figure for the workload (its group's source
    /// is `unavailable`): the 0 in the metrics file is not a measurement.
    pub(crate) fn available(&self, metrics: &WorkloadMetrics) -> bool {
        self.group
            .map_or(true, |g| g.source(metrics) != FigureSource::Unavailable)
    }

    /// The figure as a measurement: `None` where the workload lacks it or its backend does not
    /// give it. What `compare` and the CI exports read.
    pub(crate) fn measured(&self, metrics: &WorkloadMetrics) -> Option<f64> {
        if self.available(metrics) {
            (self.value)(metrics)
        } else {
            None
        }
    }

    const fn row(self, label: &'static str) -> Metric {
        Metric {
            row: Row::Starts(label),
            ..self
        }
    }

    const fn same_row(self) -> Metric {
        Metric {
            row: Row::Joins,
            ..self
        }
    }

    const fn compared(self) -> Metric {
        Metric {
            compared: true,
            ..self
        }
    }

    const fn baseline(self, basis: Basis) -> Metric {
        Metric {
            baseline: Some(basis),
            ..self
        }
    }

    const fn panel(self, title: &'static str) -> Metric {
        Metric {
            panel: Some(title),
            ..self
        }
    }

    /// The label with its unit, e.g. "TTFT p99 (ms)", as `compare` and the baseline verdicts
    /// name the figure.
    pub(crate) fn label_with_unit(&self) -> String {
        match self.unit.suffix() {
            Some(unit) => format!("{} ({unit})", self.label),
            None => self.label.to_string(),
        }
    }
}

/// A field's value as a figure.
trait Figure {
    fn figure(&self) -> Option<f64>;
}

impl Figure for f64 {
    fn figure(&self) -> Option<f64> {
        Some(*self)
    }
}

impl Figure for u64 {
    fn figure(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl<T: Figure> Figure for Option<T> {
    fn figure(&self) -> Option<f64> {
        self.as_ref().and_then(Figure::figure)
    }
}

/// An entry reading the field of that name.
macro_rules! metric {
    ($field:ident, $label:literal, $unit:ident, $better:ident) => {
        Metric::new(
            stringify!($field),
            $label,
            Unit::$unit,
            Better::$better,
            |m| Figure::figure(&m.$field),
        )
    };
}

const fn per_request(values: fn(&RequestSample) -> Option<f64>, stat: Stat) -> Basis {
    Basis::PerRequest { values, stat }
}

/// The figures, in the order the table shows them.
pub(crate) const METRICS: &[Metric] = &[
    metric!(successful_requests, "Requests ok", Count, Higher).row("Requests (ok / failed)"),
    metric!(failed_requests, "Requests failed", Count, Lower).same_row(),
    metric!(error_rate, "Error rate", Fraction, Lower)
        .row("Error rate")
        .compared()
        .baseline(Basis::Failures)
        .panel("Error rate"),
    metric!(avg_ttft_ms, "TTFT avg", Milliseconds, Lower)
        .row("TTFT avg (ms)")
        .compared(),
    metric!(p50_ttft_ms, "TTFT p50", Milliseconds, Lower)
        .row("TTFT p50 / p95 / p99 (ms)")
        .compared()
        .baseline(per_request(RequestSample::ttft_ms, Stat::P50))
        .panel("TTFT"),
    metric!(p95_ttft_ms, "TTFT p95", Milliseconds, Lower).same_row(),
    metric!(p99_ttft_ms, "TTFT p99", Milliseconds, Lower)
        .same_row()
        .compared()
        .baseline(per_request(RequestSample::ttft_ms, Stat::P99))
        .panel("TTFT"),
    // Present only in runs whose requests streamed reasoning (docs/METRICS.md, "Reasoning
    // models"): the time to the first token of the answer, which the TTFT above does not wait
    // for.
    metric!(avg_ttfo_ms, "TTFO avg", Milliseconds, Lower)
        .row("TTFO avg (ms)")
        .compared(),
    metric!(p50_ttfo_ms, "TTFO p50", Milliseconds, Lower)
        .row("TTFO p50 / p95 / p99 (ms)")
        .compared(),
    metric!(p95_ttfo_ms, "TTFO p95", Milliseconds, Lower).same_row(),
    metric!(p99_ttfo_ms, "TTFO p99", Milliseconds, Lower)
        .same_row()
        .compared(),
    metric!(std_ttfo_ms, "TTFO std", Milliseconds, Lower),
    metric!(avg_tbt_ms, "TBT avg", Milliseconds, Lower)
        .row("TBT avg (ms)")
        .compared()
        .baseline(per_request(RequestSample::tbt_ms, Stat::Mean)),
    metric!(avg_tpot_ms, "TPOT avg", Milliseconds, Lower)
        .row("TPOT avg / p99 (ms)")
        .compared()
        .baseline(per_request(RequestSample::tpot_ms, Stat::Mean)),
    metric!(p50_tpot_ms, "TPOT p50", Milliseconds, Lower).panel("TPOT"),
    metric!(p99_tpot_ms, "TPOT p99", Milliseconds, Lower)
        .same_row()
        .panel("TPOT"),
    metric!(p50_itl_ms, "ITL p50", Milliseconds, Lower)
        .row("ITL p50 / p99 (ms)")
        .panel("Inter-token gap"),
    metric!(p99_itl_ms, "ITL p99", Milliseconds, Lower)
        .same_row()
        .compared()
        .panel("Inter-token gap"),
    // Reasoning runs only: the tokens split by kind, and the answer-only pace.
    metric!(total_reasoning_tokens, "Reasoning tokens", Count, Lower)
        .row("Reasoning / answer tokens"),
    metric!(total_answer_tokens, "Answer tokens", Count, Higher).same_row(),
    metric!(avg_answer_tbt_ms, "Answer TBT avg", Milliseconds, Lower)
        .row("Answer TBT avg (ms)")
        .compared(),
    metric!(avg_answer_tpot_ms, "Answer TPOT avg", Milliseconds, Lower)
        .row("Answer TPOT avg / p99 (ms)")
        .compared(),
    metric!(p50_answer_tpot_ms, "Answer TPOT p50", Milliseconds, Lower),
    metric!(p99_answer_tpot_ms, "Answer TPOT p99", Milliseconds, Lower).same_row(),
    metric!(avg_answer_itl_ms, "Answer ITL avg", Milliseconds, Lower),
    metric!(p50_answer_itl_ms, "Answer ITL p50", Milliseconds, Lower)
        .row("Answer ITL p50 / p99 (ms)"),
    metric!(p99_answer_itl_ms, "Answer ITL p99", Milliseconds, Lower)
        .same_row()
        .compared(),
    metric!(avg_e2el_ms, "E2E avg", Milliseconds, Lower)
        .row("E2E avg / p99 (ms)")
        .compared(),
    metric!(p50_e2el_ms, "E2E p50", Milliseconds, Lower).panel("End-to-end latency"),
    metric!(p99_e2el_ms, "E2E p99", Milliseconds, Lower)
        .same_row()
        .compared()
        .panel("End-to-end latency"),
    metric!(
        avg_throughput_tps,
        "Throughput avg",
        TokensPerSecond,
        Higher
    )
    .row("Throughput per request (tok/s)")
    .baseline(per_request(RequestSample::throughput_tps, Stat::Mean)),
    metric!(
        output_throughput_tps,
        "Output throughput",
        TokensPerSecond,
        Higher
    )
    .row("Output throughput (tok/s)")
    .baseline(Basis::Single)
    .compared()
    .panel("Output throughput"),
    metric!(
        request_throughput_rps,
        "Request throughput",
        RequestsPerSecond,
        Higher
    )
    .row("Request throughput (req/s)")
    .compared(),
    // Present only in runs given goodput objectives.
    metric!(request_goodput_rps, "Goodput", RequestsPerSecond, Higher)
        .row("Goodput (req/s / % of requests)")
        .compared(),
    metric!(goodput_fraction, "Goodput fraction", Fraction, Higher)
        .same_row()
        .compared(),
    metric!(peak_mem_mb, "Peak memory", Megabytes, Lower)
        .of(Group::Memory)
        .row("Peak / avg memory (MB)")
        .baseline(Basis::Single),
    metric!(avg_mem_mb, "Avg memory", Megabytes, Lower)
        .of(Group::Memory)
        .same_row(),
    metric!(kv_used_tokens, "KV used", Count, Lower)
        .of(Group::KvCache)
        .row("KV used (tokens / MB)"),
    metric!(kv_used_bytes, "KV used", Bytes, Lower)
        .of(Group::KvCache)
        .same_row(),
    metric!(prefix_hit_rate, "Prefix hit rate", Fraction, Higher)
        .of(Group::KvCache)
        .row("Prefix hit rate"),
    metric!(evict_count, "Evictions", Count, Lower)
        .of(Group::KvCache)
        .row("Evictions (blocks / ms)"),
    metric!(evict_ms, "Eviction time", Milliseconds, Lower)
        .of(Group::KvCache)
        .same_row(),
    metric!(spec_accept_rate, "Spec accept rate", Fraction, Higher)
        .of(Group::Speculative)
        .row("Spec accept rate"),
    // The servers' own timings, where a server gives them: how much of each TTFT is the
    // engine's and how much the network's and the client's.
    metric!(server_avg_queue_ms, "Server queue avg", Milliseconds, Lower)
        .row("Server queue / TTFT avg (ms)")
        .compared(),
    metric!(server_avg_ttft_ms, "Server TTFT avg", Milliseconds, Lower)
        .same_row()
        .compared(),
    metric!(
        server_avg_prefill_ms,
        "Server prefill avg",
        Milliseconds,
        Lower
    )
    .row("Server prefill / decode avg (ms)")
    .compared(),
    metric!(
        server_avg_decode_ms,
        "Server decode avg",
        Milliseconds,
        Lower
    )
    .same_row()
    .compared(),
    metric!(
        ttft_outside_server_ms,
        "TTFT outside the server",
        Milliseconds,
        Lower
    )
    .row("TTFT outside the server (ms)")
    .compared(),
    metric!(connections_opened, "Connections opened", Count, Lower)
        .row("Connections opened / retried")
        .compared(),
    metric!(retried_requests, "Retried requests", Count, Lower).same_row(),
    metric!(total_time_s, "Wall time", Seconds, Lower).row("Wall time (s)"),
    // Over the steady window only (results/steady.rs): the load at its target, without the
    // ramp and the drain.
    metric!(steady_start_ms, "Steady window start", Milliseconds, Lower)
        .row("Steady window (ms from start to end / requests)"),
    metric!(steady_end_ms, "Steady window end", Milliseconds, Higher).same_row(),
    metric!(steady_requests, "Steady requests", Count, Higher).same_row(),
    metric!(
        steady_output_throughput_tps,
        "Steady output throughput",
        TokensPerSecond,
        Higher
    )
    .row("Steady output throughput (tok/s)")
    .compared(),
    metric!(
        steady_request_throughput_rps,
        "Steady request throughput",
        RequestsPerSecond,
        Higher
    )
    .row("Steady request throughput (req/s)")
    .compared(),
    metric!(steady_avg_ttft_ms, "Steady TTFT avg", Milliseconds, Lower)
        .row("Steady TTFT avg / p99 (ms)")
        .compared(),
    metric!(steady_p99_ttft_ms, "Steady TTFT p99", Milliseconds, Lower)
        .same_row()
        .compared(),
    metric!(steady_avg_tpot_ms, "Steady TPOT avg", Milliseconds, Lower)
        .row("Steady TPOT avg / E2E p99 (ms)")
        .compared(),
    metric!(steady_p99_e2el_ms, "Steady E2E p99", Milliseconds, Lower)
        .same_row()
        .compared(),
];

/// One row of the summary table: its label and the figures it joins.
pub(crate) struct TableRow {
    pub label: &'static str,
    pub metrics: Vec<&'static Metric>,
}

/// The table's rows, in order.
pub(crate) fn table_rows() -> Vec<TableRow> {
    let mut rows: Vec<TableRow> = Vec::new();
    for metric in METRICS {
        match metric.row {
            Row::None => {}
            Row::Starts(label) => rows.push(TableRow {
                label,
                metrics: vec![metric],
            }),
            Row::Joins => rows
                .last_mut()
                .expect("a joining entry follows the one that opens its row")
                .metrics
                .push(metric),
        }
    }
    rows
}

impl TableRow {
    /// The row's figures for one workload joined by " / ", a `-` for each figure the workload
    /// lacks, or a single `-` when it has none of them; `n/a` when its backend does not give
    /// them.
    pub(crate) fn format(&self, metrics: &WorkloadMetrics) -> String {
        if self.metrics.iter().all(|m| !m.available(metrics)) {
            return "n/a".to_string();
        }
        let values: Vec<Option<f64>> = self.metrics.iter().map(|m| m.measured(metrics)).collect();
        if values.iter().all(Option::is_none) {
            return "-".to_string();
        }
        self.metrics
            .iter()
            .zip(values)
            .map(|(m, v)| v.map_or_else(|| "-".to_string(), |v| m.unit.format(v)))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// True when some workload has one of the row's figures: rows of figures only some backends
    /// give (goodput, server timings) are left out of a run that has none of them.
    pub(crate) fn shown_for<'a>(
        &self,
        mut workloads: impl Iterator<Item = &'a WorkloadMetrics>,
    ) -> bool {
        workloads.any(|w| self.metrics.iter().any(|m| (m.value)(w).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::EngineFigures;
    use crate::results::metrics::{aggregate, WallClock};

    /// The metrics of a workload with no request.
    fn empty() -> WorkloadMetrics {
        let wall = WallClock {
            start_unix_s: 0.0,
            total_time_s: 0.0,
        };
        aggregate("w", "mock", "m", &[], wall, &EngineFigures::default())
    }

    fn metric(key: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.key == key).unwrap()
    }

    #[test]
    fn every_key_is_the_json_field_it_reads() {
        let mut metrics = empty();
        // Distinct values, so an accessor reading the wrong field is caught (and a key that is
        // no field is not read back).
        let mut fields = serde_json::to_value(&metrics).unwrap();
        let object = fields.as_object_mut().unwrap();
        for (i, entry) in METRICS.iter().enumerate() {
            object.insert(entry.key.to_string(), serde_json::json!(i as u64 + 7));
        }
        metrics = serde_json::from_value(fields).unwrap();
        for (i, entry) in METRICS.iter().enumerate() {
            assert_eq!(
                (entry.value)(&metrics),
                Some(i as f64 + 7.0),
                "{}",
                entry.key
            );
        }
    }

    #[test]
    fn keys_are_unique_and_rows_are_labelled_with_the_units_they_show() {
        for (i, a) in METRICS.iter().enumerate() {
            assert!(METRICS[i + 1..].iter().all(|b| b.key != a.key), "{}", a.key);
        }
        assert!(matches!(METRICS[0].row, Row::Starts(_)));
        for row in table_rows() {
            for m in &row.metrics {
                if let Some(unit) = m.unit.suffix() {
                    assert!(row.label.contains(unit), "{} in {}", m.key, row.label);
                }
            }
        }
    }

    #[test]
    fn figures_are_written_in_their_units() {
        assert_eq!(Unit::Fraction.format(0.1234), "12.3%");
        assert_eq!(Unit::Bytes.format(3.0 * 1024.0 * 1024.0), "3.0");
        assert_eq!(Unit::Count.format(17.0), "17");
        assert_eq!(Unit::Milliseconds.format(2.5), "2.50");
        assert_eq!(Unit::RequestsPerSecond.format(2.0), "2.000");
        assert_eq!(metric("p99_ttft_ms").label_with_unit(), "TTFT p99 (ms)");
        assert_eq!(metric("error_rate").label_with_unit(), "Error rate");
    }

    #[test]
    fn figures_the_backend_does_not_give_read_not_available_not_zero() {
        let rows = table_rows();
        let row = |label: &str| rows.iter().find(|r| r.label.starts_with(label)).unwrap();
        let mut m = empty();
        m.sources.kv_cache = FigureSource::Unavailable;
        m.sources.memory = FigureSource::Measured;
        m.peak_mem_mb = 12.0;
        assert_eq!(row("KV used").format(&m), "n/a");
        assert_eq!(row("Prefix hit rate").format(&m), "n/a");
        assert_eq!(row("Peak / avg memory").format(&m), "12.0 / 0.0");
        let hit = METRICS.iter().find(|x| x.key == "prefix_hit_rate").unwrap();
        assert_eq!(hit.measured(&m), None, "not exported or compared as a 0");
        m.sources.kv_cache = FigureSource::Scraped;
        assert_eq!(row("Prefix hit rate").format(&m), "0.0%");
        assert_eq!(hit.measured(&m), Some(0.0));
    }

    #[test]
    fn a_row_marks_each_missing_figure_and_one_dash_for_none() {
        let rows = table_rows();
        let goodput = rows
            .iter()
            .find(|r| r.label.starts_with("Goodput"))
            .unwrap();
        let mut m = empty();
        assert_eq!(goodput.format(&m), "-");
        assert!(!goodput.shown_for([&m].into_iter()));
        m.request_goodput_rps = Some(1.5);
        assert_eq!(goodput.format(&m), "1.500 / -");
        m.goodput_fraction = Some(0.5);
        assert_eq!(goodput.format(&m), "1.500 / 50.0%");
        assert!(goodput.shown_for([&m].into_iter()));
    }
}
