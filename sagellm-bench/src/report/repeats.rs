//! A repeated run's summary (`--num-runs`): `repeats.json` beside the runs' folders, and its
//! table: per workload, each figure's mean over the runs, its 95% interval and its CV.

use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use super::names::REPEATS_FILE;
use super::ReportError;
use crate::results::catalogue::METRICS;
use crate::results::repeats::RepeatSummary;

/// Writes `repeats.json` into `dir`.
pub fn write(dir: &Path, summary: &RepeatSummary) -> Result<(), ReportError> {
    super::files::write_json(&dir.join(REPEATS_FILE), summary)
}

/// Reads `repeats.json` from `path` (the file or its folder).
pub fn load(path: &Path) -> Result<RepeatSummary, ReportError> {
    let file = if path.is_dir() {
        path.join(REPEATS_FILE)
    } else {
        path.to_path_buf()
    };
    let text = crate::workload::input::read_to_string(&file)
        .map_err(|e| ReportError::io("read", file.as_path(), e))?;
    serde_json::from_str(&text).map_err(|e| {
        ReportError::other(format!(
            "{} is not a repeated run's summary ({REPEATS_FILE}): {e}",
            file.display()
        ))
    })
}

/// The table of a repeated run, one per workload, with the noisy figures named at the end.
pub fn render(summary: &RepeatSummary) -> String {
    let mut out = format!(
        "Repeated runs: {} of {}, {:.0}% confidence intervals of the mean (Student t), CV above {} flagged\n",
        summary.runs,
        summary.requested_runs,
        summary.confidence * 100.0,
        percent(summary.cv_bound)
    );
    if let Some(stopped) = &summary.stopped {
        out.push_str(&format!(
            "INCOMPLETE: {stopped}; the figures are over the completed runs\n"
        ));
    }
    for w in &summary.workloads {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(vec![
                Cell::new(&w.workload),
                Cell::new("mean"),
                Cell::new("95% CI"),
                Cell::new("CV"),
                Cell::new(""),
            ]);
        for m in &w.metrics {
            let s = &m.spread;
            // Written as the results table writes the figure (its unit, its digits).
            let unit = METRICS.iter().find(|c| c.key == m.metric).map(|c| c.unit);
            let figure = |v: f64| unit.map_or_else(|| format!("{v}"), |u| u.format(v));
            let ci = s.ci.map_or_else(
                || "-".to_string(),
                |(lo, hi)| format!("{} .. {}", figure(lo), figure(hi)),
            );
            let cv = s.cv.map_or_else(|| "-".to_string(), percent);
            table.add_row(vec![
                Cell::new(&m.label),
                Cell::new(figure(s.mean)).set_alignment(CellAlignment::Right),
                Cell::new(ci).set_alignment(CellAlignment::Right),
                Cell::new(cv).set_alignment(CellAlignment::Right),
                Cell::new(if s.noisy { "noisy" } else { "" }),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }
    let noisy = summary.noisy();
    if !noisy.is_empty() {
        out.push_str(&format!(
            "Noisy (CV above {}): {}\n",
            percent(summary.cv_bound),
            noisy.join(", ")
        ));
    }
    out
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}
