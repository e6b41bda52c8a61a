//! Reporters: one trait, one implementation per output format.
//!
//! The runner calls every hook of a [`Report`] as the run goes; each hook has an empty default,
//! so a reporter implements only what it needs. [`Reports`] fans one call out to several
//! reporters, so the runner sees one.

pub mod collect;
pub mod export;
pub mod files;
#[cfg(feature = "charts")]
pub mod html;
#[cfg(feature = "charts")]
pub mod markdown;
pub mod merge;
pub mod names;
pub mod progress;
pub mod repeats;
pub mod search;
#[cfg(feature = "charts")]
pub mod svg;
pub mod table;

pub use crate::run::hooks::{Report, ReportError};

use crate::backend::FigureSource;
use crate::results::catalogue;
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
    /// Every reporter's last word, then one flush of every file they wrote.
    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        self.0
            .iter_mut()
            .try_for_each(|r| r.run_finished(summary))?;
        files::flush_to_disk()
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
            Box::new(html::HtmlReport::new(&dir)),
        ])
    }
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

/// The rows a summary's table shows, one cell per workload: the catalogue's rows, less those
/// whose figures no workload has (goodput without objectives, server timings on the mock), and
/// the goodput objectives after the goodput row when some workload measured goodput.
/// The columns of the per-turn table.
pub(crate) const TURN_COLUMNS: [&str; 8] = [
    "Workload",
    "Turn",
    "Requests",
    "Successful",
    "Mean TTFT (ms)",
    "P99 TTFT (ms)",
    "Mean prompt (tokens)",
    "Prefix hit rate",
];

/// The per-turn table of the summary's multi-turn workloads, a row per workload and turn
/// (turns counted from 1, as a reader counts them); empty when no workload is multi-turn.
pub(crate) fn turn_rows(summary: &Summary) -> Vec<[String; 8]> {
    summary
        .workloads
        .iter()
        .flat_map(|(name, m)| {
            m.turns.iter().map(move |t| {
                [
                    name.clone(),
                    (t.turn + 1).to_string(),
                    t.requests.to_string(),
                    t.successful_requests.to_string(),
                    format!("{:.2}", t.avg_ttft_ms),
                    format!("{:.2}", t.p99_ttft_ms),
                    format!("{:.1}", t.avg_prompt_tokens),
                    t.prefix_hit_rate
                        .map_or_else(|| "n/a".to_string(), |r| format!("{:.1}%", 100.0 * r)),
                ]
            })
        })
        .collect()
}

pub(crate) fn rows_for(summary: &Summary) -> Vec<(std::borrow::Cow<'static, str>, Vec<String>)> {
    let mut rows = Vec::new();
    for row in catalogue::table_rows() {
        if !row.shown_for(summary.workloads.values()) {
            continue;
        }
        // The table says when a steady window is too short for its figures to be trusted.
        let steady = row.metrics.iter().any(|m| m.key == "steady_requests");
        // and when a wall time is the simulation's (the mock's virtual clock), not the machine's.
        let wall = row.metrics.iter().any(|m| m.key == "total_time_s");
        rows.push((
            row.label.into(),
            summary
                .workloads
                .values()
                .map(|m| {
                    let cell = row.format(m);
                    if steady && m.steady_too_short == Some(true) {
                        format!("{cell} (too short to trust)")
                    } else if wall && m.sources.latency == FigureSource::Simulated {
                        format!("{cell} (simulated)")
                    } else {
                        cell
                    }
                })
                .collect(),
        ));
        // The percentiles asked for beside p50, p95 and p99 (`--percentiles`), a row each,
        // under the row that ends with the E2E p99.
        if row.metrics.iter().any(|m| m.key == "p99_e2el_ms") {
            rows.extend(extra_percentile_rows(summary));
        }
        if row.metrics.iter().any(|m| m.key == "request_goodput_rps") {
            rows.push((
                "Goodput SLO (ms)".into(),
                summary
                    .workloads
                    .values()
                    .map(|m| {
                        m.goodput_slo
                            .map_or_else(|| "-".to_string(), |slo| slo_text(&slo))
                    })
                    .collect(),
            ));
        }
    }
    rows
}

/// A row per percentile any workload reports beside p50, p95 and p99: its TTFT, TPOT, ITL
/// and E2E latency, `-` for a workload without it.
fn extra_percentile_rows(summary: &Summary) -> Vec<(std::borrow::Cow<'static, str>, Vec<String>)> {
    use crate::results::metrics::ExtraPercentiles;
    let mut asked: Vec<f64> = summary
        .workloads
        .values()
        .flat_map(|m| m.percentiles.0.iter().map(|e| e.p))
        .collect();
    asked.sort_by(f64::total_cmp);
    asked.dedup();
    asked
        .into_iter()
        .map(|p| {
            let label = format!(
                "TTFT / TPOT / ITL / E2E p{} (ms)",
                ExtraPercentiles::label(p)
            );
            let cells = summary
                .workloads
                .values()
                .map(|m| match m.percentiles.0.iter().find(|e| e.p == p) {
                    Some(e) => format!(
                        "{:.2} / {:.2} / {:.2} / {:.2}",
                        e.ttft_ms, e.tpot_ms, e.itl_ms, e.e2el_ms
                    ),
                    None => "-".to_string(),
                })
                .collect();
            (label.into(), cells)
        })
        .collect()
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
        if m.sources.latency == FigureSource::Simulated {
            parts.push(
                "latency and wall time: simulated (a virtual clock: the simulated engine's time, not this machine's)"
                    .to_string(),
            );
        } else {
            parts.push(format!("latency: {}", name(m.sources.latency)));
        }
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
