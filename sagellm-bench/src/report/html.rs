//! `index.html`: the whole run on one page (summary table, each workload's figures and charts,
//! failures, provenance), rendered with tinytemplate.
//!
//! The charts are inlined as SVG, and the style sheet is inlined too, so the page needs no other
//! file and no network: it opens from disk, and a CI artifact upload of the results folder carries
//! it whole. Every text that comes from outside the program (model and workload names, the
//! command line, host name, error messages a server sent) goes through tinytemplate's HTML
//! escaping; only the SVG (whose text plotters escapes) and the built-in style sheet are inserted
//! raw.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;
use tinytemplate::TinyTemplate;

use super::files::{prepare_dir, write_atomically};
use super::names::{self, file_stem};
use super::svg::{self, Chart, RunLabel};
use super::{rows_for, sources_note, turn_rows, Report, ReportError, TURN_COLUMNS};
use crate::results::metrics::WorkloadMetrics;
use crate::results::samples::{Samples, WorkloadSamples, KEPT_FAILURES};
use crate::results::summary::{Provenance, Summary};
use crate::results::WorkloadResult;
use crate::workload::Workload;

/// The report's file name.
pub const INDEX_FILE: &str = "index.html";

/// Failed requests listed per workload; the rest are counted.
/// At most as many as the samples keep with their messages.
const LISTED_FAILURES: usize = KEPT_FAILURES;

const TEMPLATE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Benchmark report: {model} on {backend}</title>
<style>{css | unescaped}</style>
</head>
<body>
<header>
<h1>Benchmark report</h1>
<p class="lead">Backend <code>{backend}</code>, model <code>{model}</code>, started {start_time_utc} on <code>{host}</code>.</p>
<p class="counts">{total_workloads} workloads, {total_requests} requests: {successful_requests} successful, <span class="{failed_class}">{failed_requests} failed</span>.</p>
<nav>Jump to: <a href="#summary">summary</a>{{ for w in workloads }} · <a href="#{w.anchor}">{w.name}</a>{{ endfor }} · <a href="#provenance">provenance</a></nav>
</header>
<main>
<section id="summary">
<h2>Summary</h2>
<div class="scroll"><table class="summary">
<thead><tr><th>Metric</th>{{ for w in workloads }}<th>{w.name}</th>{{ endfor }}</tr></thead>
<tbody>
{{ for row in rows }}<tr><th>{row.label}</th>{{ for v in row.values }}<td>{v}</td>{{ endfor }}</tr>
{{ endfor }}</tbody>
</table></div>
<p class="note">Figures: {sources}. Percentiles: {percentile_method}.</p>
{{ if turns }}<h3>Per turn of the multi-turn sessions</h3>
<div class="scroll"><table class="summary">
<thead><tr>{{ for c in turn_columns }}<th>{c}</th>{{ endfor }}</tr></thead>
<tbody>
{{ for row in turns }}<tr>{{ for v in row }}<td>{v}</td>{{ endfor }}</tr>
{{ endfor }}</tbody>
</table></div>
{{ endif }}{{ for chart in run_charts }}<figure>{chart.svg | unescaped}<figcaption>{chart.title}</figcaption></figure>
{{ endfor }}</section>
{{ for w in workloads }}<section id="{w.anchor}">
<h2>Workload <code>{w.name}</code></h2>
<p>{w.requests} requests, {w.failed} failed.{{ if w.no_records }} <strong>No request records were found for this workload; its charts are empty.</strong>{{ endif }}</p>
<div class="charts">
{{ for chart in w.charts }}<figure>{chart.svg | unescaped}<figcaption>{chart.title}</figcaption></figure>
{{ endfor }}</div>
<details><summary>Every figure of <code>{w.name}</code></summary>
<table class="figures"><tbody>
{{ for f in w.figures }}<tr><th>{f.name}</th><td>{f.value}</td></tr>
{{ endfor }}</tbody></table>
</details>
{{ if w.failures }}<h3>Failed requests</h3>
<table class="failures"><thead><tr><th>Request</th><th>Kind</th><th>Message</th></tr></thead><tbody>
{{ for f in w.failures }}<tr><td>{f.index}</td><td>{f.kind}</td><td>{f.message}</td></tr>
{{ endfor }}</tbody></table>
{{ if w.more_failures }}<p class="note">… and {w.more_failures} more; see <code>{w.requests_file}</code>.</p>{{ endif }}
{{ endif }}</section>
{{ endfor }}<section id="provenance">
<h2>Provenance</h2>
<table class="figures"><tbody>
<tr><th>Tool</th><td>{tool} {tool_version}</td></tr>
<tr><th>Command</th><td><code>{command}</code></td></tr>
<tr><th>Host</th><td>{host}</td></tr>
<tr><th>Started</th><td>{start_time_utc}</td></tr>
<tr><th>Backend</th><td>{backend}</td></tr>
<tr><th>Model</th><td>{model}</td></tr>
<tr><th>Percentiles</th><td>{percentile_method}</td></tr>
</tbody></table>
<details><summary>Backend settings</summary><pre>{backend_settings}</pre></details>
<p class="note">Raw data beside this page: <code>benchmark_summary.json</code>, <code>&lt;workload&gt;_metrics.json</code>, <code>&lt;workload&gt;_requests.jsonl</code>, and every chart as an SVG file.</p>
</section>
</main>
</body>
</html>
"##;

const CSS: &str = "
:root { color-scheme: light; --text: #212529; --muted: #6c757d; --line: #dee2e6; --bg: #f8f9fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif;
  color: var(--text); background: #fff; }
header, main { max-width: 1900px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 32px 0 8px; font-size: 22px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; }
.lead { margin: 0; }
.counts { margin: 2px 0 8px; }
.bad { color: #b02a37; font-weight: 600; }
nav { margin: 8px 0 14px; color: var(--muted); }
a { color: #0a58ca; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 90%;
  background: var(--bg); padding: 1px 4px; border-radius: 3px; word-break: break-all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 4px 10px; }
thead th { background: var(--bg); }
table.summary td { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary tbody th, table.figures th { text-align: left; font-weight: 500; background: var(--bg); }
table.figures td { font-variant-numeric: tabular-nums; }
.note { color: var(--muted); font-size: 13px; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 900px), 1fr)); gap: 16px; }
figure { margin: 12px 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; background: #fff; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; text-align: center; }
details { margin: 10px 0; }
summary { cursor: pointer; color: #0a58ca; }
pre { background: var(--bg); padding: 8px; overflow-x: auto; font-size: 13px; }
";

#[derive(Serialize)]
struct Page {
    css: &'static str,
    tool: String,
    tool_version: String,
    backend: String,
    model: String,
    host: String,
    start_time_utc: String,
    command: String,
    percentile_method: String,
    sources: String,
    backend_settings: String,
    total_workloads: u64,
    total_requests: u64,
    successful_requests: u64,
    failed_requests: u64,
    failed_class: &'static str,
    rows: Vec<Row>,
    run_charts: Vec<ChartView>,
    turn_columns: [&'static str; 8],
    /// The per-turn table, a row per workload and turn (empty without sessions).
    turns: Vec<Vec<String>>,
    workloads: Vec<WorkloadView>,
}

#[derive(Serialize)]
struct Row {
    label: String,
    values: Vec<String>,
}

#[derive(Serialize)]
struct ChartView {
    title: String,
    svg: String,
}

#[derive(Serialize)]
struct WorkloadView {
    name: String,
    anchor: String,
    requests: u64,
    failed: u64,
    no_records: bool,
    requests_file: String,
    charts: Vec<ChartView>,
    figures: Vec<Figure>,
    failures: Vec<Failure>,
    more_failures: usize,
}

#[derive(Serialize)]
struct Figure {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct Failure {
    index: usize,
    kind: String,
    message: String,
}

/// Renders the page from the summary, the samples of each workload's request records, and the
/// charts drawn from them (see [`svg::all_charts`]).
pub fn render(summary: &Summary, samples: &IndexMap<String, Samples>, charts: &[Chart]) -> String {
    let p = &summary.provenance;
    let o = &summary.overall;
    let view = |c: &Chart| ChartView {
        title: c.title.clone(),
        svg: c.svg.clone(),
    };
    let workloads = summary
        .workloads
        .iter()
        .map(|(name, metrics)| {
            let kept = samples.get(name);
            let failed = kept.map(|s| s.failed()).unwrap_or_default();
            let listed = kept.map(|s| s.failures()).unwrap_or_default();
            WorkloadView {
                name: name.clone(),
                anchor: format!("w-{}", file_stem(name)),
                requests: metrics.total_requests,
                failed: metrics.failed_requests,
                no_records: kept.is_none(),
                requests_file: names::requests_file(name),
                charts: charts
                    .iter()
                    .filter(|c| c.workload.as_deref() == Some(name.as_str()))
                    .map(view)
                    .collect(),
                figures: figures(metrics),
                failures: listed
                    .iter()
                    .take(LISTED_FAILURES)
                    .map(|f| Failure {
                        index: f.index,
                        kind: json_name(&f.error.kind),
                        message: f.error.message.clone(),
                    })
                    .collect(),
                more_failures: failed.saturating_sub(LISTED_FAILURES.min(listed.len())),
            }
        })
        .collect();
    let page = Page {
        css: CSS,
        tool: p.tool.clone(),
        tool_version: p.tool_version.clone(),
        backend: p.backend.clone(),
        model: p.model.clone(),
        host: p.host.clone(),
        start_time_utc: p.start_time_utc.clone(),
        command: p.command.clone(),
        percentile_method: p.percentile_method.clone(),
        sources: sources_note(summary),
        backend_settings: serde_json::to_string_pretty(&p.backend_settings).unwrap_or_default(),
        total_workloads: o.total_workloads,
        total_requests: o.total_requests,
        successful_requests: o.successful_requests,
        failed_requests: o.failed_requests,
        failed_class: if o.failed_requests > 0 { "bad" } else { "" },
        rows: rows_for(summary)
            .into_iter()
            .map(|(label, cells)| Row {
                label: label.to_string(),
                values: cells,
            })
            .collect(),
        run_charts: charts
            .iter()
            .filter(|c| c.workload.is_none())
            .map(view)
            .collect(),
        turn_columns: TURN_COLUMNS,
        turns: turn_rows(summary).into_iter().map(Vec::from).collect(),
        workloads,
    };
    let mut tt = TinyTemplate::new();
    tt.add_template("index", TEMPLATE)
        .expect("the built-in template parses");
    tt.render("index", &page)
        .expect("the built-in template renders its own context")
}

/// Every field of a workload's metrics file, in file order, formatted for reading.
fn figures(metrics: &crate::results::metrics::WorkloadMetrics) -> Vec<Figure> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(metrics) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in fields {
        match value {
            serde_json::Value::Object(inner) => {
                for (k, v) in inner {
                    out.push(Figure {
                        name: format!("{name}.{k}"),
                        value: plain(&v),
                    });
                }
            }
            v => out.push(Figure {
                name,
                value: plain(&v),
            }),
        }
    }
    out
}

fn plain(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
            (None, Some(f)) => format!("{f:.4}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn json_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Draws every chart and writes them and `index.html` into `dir`; returns the page's path.
/// This is what `report --format html` does with a saved run.
pub fn write_report(
    dir: &Path,
    summary: &Summary,
    samples: &IndexMap<String, Samples>,
) -> Result<PathBuf, ReportError> {
    prepare_dir(dir)?;
    let charts = svg::all_charts(summary, samples)?;
    svg::write_charts(dir, &charts)?;
    let index = dir.join(INDEX_FILE);
    write_atomically(&index, render(summary, samples, &charts).as_bytes())?;
    Ok(index)
}

/// Writes each workload's charts as the workload finishes, and when the run ends the run's
/// charts and `index.html`, which inlines the charts already drawn: each chart is drawn once.
pub struct HtmlReport {
    dir: PathBuf,
    run: Option<RunLabel>,
    samples: IndexMap<String, Samples>,
    /// Every chart written so far, in the order drawn.
    charts: Vec<Chart>,
}

impl HtmlReport {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HtmlReport {
            dir: dir.into(),
            run: None,
            samples: IndexMap::new(),
            charts: Vec::new(),
        }
    }

    fn draw_workload(
        &mut self,
        run: &RunLabel,
        metrics: &WorkloadMetrics,
        samples: &WorkloadSamples,
    ) -> Result<(), ReportError> {
        let charts = svg::workload_charts(run, metrics, samples)?;
        svg::write_charts(&self.dir, &charts)?;
        self.charts.extend(charts);
        Ok(())
    }
}

impl Report for HtmlReport {
    fn run_started(&mut self, provenance: &Provenance, _: &[Workload]) -> Result<(), ReportError> {
        self.run = Some(RunLabel::of(provenance));
        prepare_dir(&self.dir)
    }

    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        let run = self
            .run
            .clone()
            .unwrap_or_else(|| RunLabel("run: unnamed".to_string()));
        self.draw_workload(&run, &result.metrics, &result.samples)?;
        self.samples
            .insert(result.workload.name.clone(), result.samples.clone());
        Ok(())
    }

    fn run_finished(&mut self, summary: &Summary) -> Result<(), ReportError> {
        // A workload of the summary that never reported its end still gets (empty) charts,
        // as `report --format html` draws them.
        let run = RunLabel::of(&summary.provenance);
        let none = WorkloadSamples::default();
        for (name, metrics) in &summary.workloads {
            if !self
                .charts
                .iter()
                .any(|c| c.workload.as_ref() == Some(name))
            {
                self.draw_workload(&run, metrics, &none)?;
            }
        }
        let run_charts = svg::run_charts(summary, &self.samples)?;
        svg::write_charts(&self.dir, &run_charts)?;
        self.charts.extend(run_charts);
        let page = render(summary, &self.samples, &self.charts);
        write_atomically(&self.dir.join(INDEX_FILE), page.as_bytes())
    }
}
