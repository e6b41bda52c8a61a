//! Reporters: one trait, one implementation per output format.
//!
//! The runner calls every hook of a [`Report`] as the run goes; each hook has an empty default,
//! so a reporter implements only what it needs. [`Reports`] fans one call out to several
//! reporters, so the runner sees one.

pub mod collect;
pub mod files;
#[cfg(feature = "charts")]
pub mod html;
#[cfg(feature = "charts")]
pub mod markdown;
pub mod names;
pub mod progress;
#[cfg(feature = "charts")]
pub mod svg;
pub mod table;

pub use crate::run::hooks::{Report, ReportError};

use crate::results::metrics::WorkloadMetrics;
use crate::results::record::RequestRecord;
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// Several reporters behind one.
#[derive(Default)]
pub struct Reports(Vec<Box<dyn Report>>);

impl Report for Reports {
    fn run_started(
        &mut self,
        provenance: &Provenance,
        workloads: &[Workload],
    ) -> Result<(), ReportError> {
        self.0
            .iter_mut()
            .try_for_each(|r| r.run_started(provenance, workloads))
    }
    fn workload_started(&mut self, workload: &Workload) -> Result<(), ReportError> {
        self.0
            .iter_mut()
            .try_for_each(|r| r.workload_started(workload))
    }
    fn request_finished(
        &mut self,
        workload: &Workload,
        record: &RequestRecord,
    ) -> Result<(), ReportError> {
        self.0
            .iter_mut()
            .try_for_each(|r| r.request_finished(workload, record))
    }
    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        self.0
            .iter_mut()
            .try_for_each(|r| r.workload_finished(result))
    }
    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        self.0.iter_mut().try_for_each(|r| r.run_finished(summary))
    }
}

impl Reports {
    /// These reporters, called in this order.
    pub fn new(reporters: Vec<Box<dyn Report>>) -> Self {
        Reports(reporters)
    }

    /// Adds a reporter after the others.
    pub fn push(&mut self, reporter: Box<dyn Report>) {
        self.0.push(reporter);
    }

    /// The reporters that write a run's files into `dir`: the JSON files, and with the
    /// `charts` feature the SVG charts and `index.html`. The CLI and `cargo bench` both start
    /// from these, so either door leaves the same folder behind.
    pub fn files(dir: impl Into<std::path::PathBuf>) -> Self {
        let dir = dir.into();
        Reports(vec![
            Box::new(files::JsonFiles::new(&dir)),
            #[cfg(feature = "charts")]
            Box::new(svg::SvgCharts::new(&dir)),
            #[cfg(feature = "charts")]
            Box::new(html::HtmlReport::new(&dir)),
        ])
    }
}

/// Formats one figure of a workload for display.
pub(crate) type Formatter = fn(&WorkloadMetrics) -> String;

/// The figures the table and markdown views show, one row each: a label and a formatter.
pub(crate) const KEY_ROWS: &[(&str, Formatter)] = &[
    ("Requests (ok / failed)", |m| {
        format!("{} / {}", m.successful_requests, m.failed_requests)
    }),
    ("Error rate", |m| format!("{:.1}%", m.error_rate * 100.0)),
    ("TTFT avg (ms)", |m| format!("{:.2}", m.avg_ttft_ms)),
    ("TTFT p50 / p95 / p99 (ms)", |m| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            m.p50_ttft_ms, m.p95_ttft_ms, m.p99_ttft_ms
        )
    }),
    ("TBT avg (ms)", |m| format!("{:.2}", m.avg_tbt_ms)),
    ("TPOT avg / p99 (ms)", |m| {
        format!("{:.2} / {:.2}", m.avg_tpot_ms, m.p99_tpot_ms)
    }),
    ("ITL p50 / p99 (ms)", |m| {
        format!("{:.2} / {:.2}", m.p50_itl_ms, m.p99_itl_ms)
    }),
    ("E2E avg / p99 (ms)", |m| {
        format!("{:.2} / {:.2}", m.avg_e2el_ms, m.p99_e2el_ms)
    }),
    ("Throughput per request (tok/s)", |m| {
        format!("{:.2}", m.avg_throughput_tps)
    }),
    ("Output throughput (tok/s)", |m| {
        format!("{:.2}", m.output_throughput_tps)
    }),
    ("Request throughput (req/s)", |m| {
        format!("{:.3}", m.request_throughput_rps)
    }),
    ("Peak / avg memory (MB)", |m| {
        format!("{:.1} / {:.1}", m.peak_mem_mb, m.avg_mem_mb)
    }),
    ("KV used (tokens / MB)", |m| {
        format!(
            "{} / {:.1}",
            m.kv_used_tokens,
            m.kv_used_bytes as f64 / (1024.0 * 1024.0)
        )
    }),
    ("Prefix hit rate", |m| {
        format!("{:.1}%", m.prefix_hit_rate * 100.0)
    }),
    ("Evictions (blocks / ms)", |m| {
        format!("{} / {:.2}", m.evict_count, m.evict_ms)
    }),
    ("Spec accept rate", |m| {
        format!("{:.1}%", m.spec_accept_rate * 100.0)
    }),
    ("Wall time (s)", |m| format!("{:.3}", m.total_time_s)),
];

/// The rows of goodput figures, shown when some workload has them.
const GOODPUT_ROWS: &[(&str, Formatter)] = &[
    ("Goodput (req/s / % of requests)", |m| {
        match (m.request_goodput_rps, m.goodput_fraction) {
            (Some(rps), Some(fraction)) => format!("{rps:.3} / {:.1}%", fraction * 100.0),
            _ => "-".to_string(),
        }
    }),
    ("Goodput SLO (ms)", |m| {
        m.goodput_slo
            .map(|slo| slo_text(&slo))
            .unwrap_or_else(|| "-".to_string())
    }),
];

/// The rows of a server's own timings and of the client's connections, shown when some workload
/// has them (server backends); `-` where a workload's server does not give the figure.
const SERVER_ROWS: &[(&str, Formatter)] = &[
    ("Server queue / TTFT avg (ms)", |m| {
        format!(
            "{} / {}",
            ms_or_dash(m.server_avg_queue_ms),
            ms_or_dash(m.server_avg_ttft_ms)
        )
    }),
    ("Server prefill / decode avg (ms)", |m| {
        format!(
            "{} / {}",
            ms_or_dash(m.server_avg_prefill_ms),
            ms_or_dash(m.server_avg_decode_ms)
        )
    }),
    ("TTFT outside the server (ms)", |m| {
        ms_or_dash(m.ttft_outside_server_ms)
    }),
    ("Connections opened / retried", |m| {
        match (m.connections_opened, m.retried_requests) {
            (Some(opened), Some(retried)) => format!("{opened} / {retried}"),
            _ => "-".to_string(),
        }
    }),
];

fn ms_or_dash(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.2}"))
}

/// Objectives as the command line writes them, e.g. "ttft:200,e2el:5000".
pub(crate) fn slo_text(slo: &crate::workload::slo::Slo) -> String {
    [
        ("ttft", slo.ttft_ms),
        ("tbt", slo.tbt_ms),
        ("e2el", slo.e2el_ms),
    ]
    .iter()
    .filter_map(|(key, limit)| limit.map(|ms| format!("{key}:{ms}")))
    .collect::<Vec<_>>()
    .join(",")
}

/// The rows a summary's table shows: [`KEY_ROWS`], and the goodput rows when some workload
/// measured goodput.
pub(crate) fn rows_for(summary: &Summary) -> Vec<(&'static str, Formatter)> {
    let mut rows = KEY_ROWS.to_vec();
    if summary
        .workloads
        .values()
        .any(|m| m.request_goodput_rps.is_some())
    {
        // After the request throughput, the figure goodput qualifies.
        let at = rows
            .iter()
            .position(|(label, _)| label.starts_with("Request throughput"))
            .map_or(rows.len(), |i| i + 1);
        rows.splice(at..at, GOODPUT_ROWS.iter().copied());
    }
    if summary.workloads.values().any(|m| {
        m.connections_opened.is_some()
            || m.server_avg_ttft_ms.is_some()
            || m.server_avg_prefill_ms.is_some()
    }) {
        // Before the wall time, the last row.
        let at = rows.len().saturating_sub(1);
        rows.splice(at..at, SERVER_ROWS.iter().copied());
    }
    rows
}

/// A warning line for a run that stopped early, or "" for a complete one.
pub(crate) fn incomplete_note(summary: &Summary) -> String {
    if summary.complete {
        return String::new();
    }
    let partial: Vec<&str> = summary
        .workloads
        .iter()
        .filter(|(_, m)| !m.complete)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut note = format!(
        "INCOMPLETE RUN: {}; only finished requests are counted",
        summary
            .incomplete_reason
            .as_deref()
            .unwrap_or("stopped early")
    );
    if !partial.is_empty() {
        note.push_str(&format!(" ({} cut short)", partial.join(", ")));
    }
    note
}

/// A one-line note on where the figures came from, e.g. "memory and KV: simulated".
pub(crate) fn sources_note(summary: &Summary) -> String {
    let mut parts = Vec::new();
    if let Some(m) = summary.workloads.values().next() {
        let name = |s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        parts.push(format!("latency: {}", name(m.sources.latency)));
        parts.push(format!("memory: {}", name(m.sources.memory)));
        parts.push(format!("KV cache: {}", name(m.sources.kv_cache)));
        parts.push(format!("speculation: {}", name(m.sources.speculative)));
    }
    // Output token counts can differ by workload (a server may send usage for some requests
    // only); one word when they agree.
    let mut counts: Vec<String> = Vec::new();
    for m in summary.workloads.values() {
        let source = serde_json::to_value(m.sources.output_tokens)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        if !counts.contains(&source) {
            counts.push(source);
        }
    }
    if !counts.is_empty() {
        parts.push(format!("output tokens: {}", counts.join(" / ")));
    }
    parts.join(", ")
}
