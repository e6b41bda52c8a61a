//! GitHub-flavoured markdown, fit for a CI job summary, rendered with tinytemplate.

use std::path::Path;

use serde::Serialize;
use tinytemplate::TinyTemplate;

use super::svg::{RunChart, WorkloadChart};
use super::{incomplete_note, rows_for, sources_note, turn_rows, TURN_COLUMNS};
use crate::results::summary::Summary;

const TEMPLATE: &str = "# Benchmark report
{{ if incomplete }}
> **{incomplete}**
{{ endif }}
Backend `{backend}`, model `{model}`, {total_workloads} workloads, {total_requests} requests \
({successful_requests} successful, {failed_requests} failed). Started {start_time_utc} on `{host}`.

| Metric |{{ for w in workloads }} {w} |{{ endfor }}
|---|{{ for w in workloads }}---:|{{ endfor }}
{{ for row in rows }}| {row.label} |{{ for v in row.values }} {v} |{{ endfor }}
{{ endfor }}
Figures: {sources}. Percentiles: {percentile_method}.
{{ if turns }}
## Per turn of the multi-turn sessions

|{{ for c in turn_columns }} {c} |{{ endfor }}
|---|{{ for c in turn_columns }}{{ if not @first }}---:|{{ endif }}{{ endfor }}
{{ for row in turns }}|{{ for v in row }} {v} |{{ endfor }}
{{ endfor }}{{ endif }}
{{ if charts }}
## Charts
{{ for group in charts }}
**{group.heading}**: {{ for c in group.links }}[{c.title}]({c.path}){{ if not @last }} · {{ endif }}{{ endfor }}
{{ endfor }}{{ endif }}
Produced by sagellm-bench {tool_version}: `{command}`
";

#[derive(Serialize)]
struct Context {
    /// A warning for a run that stopped early; empty for a complete run.
    incomplete: String,
    backend: String,
    model: String,
    total_workloads: u64,
    total_requests: u64,
    successful_requests: u64,
    failed_requests: u64,
    start_time_utc: String,
    host: String,
    workloads: Vec<String>,
    rows: Vec<Row>,
    turn_columns: [&'static str; 8],
    turns: Vec<Vec<String>>,
    sources: String,
    percentile_method: String,
    tool_version: String,
    command: String,
    charts: Vec<ChartGroup>,
}

#[derive(Serialize)]
struct ChartGroup {
    heading: String,
    links: Vec<ChartLink>,
}

#[derive(Serialize)]
struct ChartLink {
    title: String,
    path: String,
}

#[derive(Serialize)]
struct Row {
    label: String,
    values: Vec<String>,
}

/// Escapes text for a markdown table cell or inline code.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('`', "'")
        .replace('\n', " ")
}

/// Renders the summary as markdown, without chart links.
pub fn render(summary: &Summary) -> String {
    render_with_charts(summary, None)
}

/// Renders the summary as markdown, with links to the SVG charts found in `charts_dir`. Links
/// are `charts_dir` joined with the file name, so they resolve from the folder the markdown file
/// is written to when `charts_dir` is relative to it (as `--input` is to the working directory).
/// Charts missing on disk are not linked.
pub fn render_with_charts(summary: &Summary, charts_dir: Option<&Path>) -> String {
    let charts = charts_dir
        .map(|d| chart_groups(summary, d, d))
        .unwrap_or_default();
    render_groups(summary, charts)
}

fn render_groups(summary: &Summary, charts: Vec<ChartGroup>) -> String {
    let p = &summary.provenance;
    let o = &summary.overall;
    let context = Context {
        incomplete: cell(&incomplete_note(summary)),
        backend: cell(&p.backend),
        model: cell(&p.model),
        total_workloads: o.total_workloads,
        total_requests: o.total_requests,
        successful_requests: o.successful_requests,
        failed_requests: o.failed_requests,
        start_time_utc: cell(&p.start_time_utc),
        host: cell(&p.host),
        workloads: summary.workloads.keys().map(|k| cell(k)).collect(),
        rows: rows_for(summary)
            .into_iter()
            .map(|(label, cells)| Row {
                label: label.to_string(),
                values: cells.iter().map(|c| cell(c)).collect(),
            })
            .collect(),
        turn_columns: TURN_COLUMNS,
        turns: turn_rows(summary)
            .into_iter()
            .map(|row| row.iter().map(|c| cell(c)).collect())
            .collect(),
        sources: sources_note(summary),
        percentile_method: p.percentile_method.clone(),
        tool_version: cell(&p.tool_version),
        command: cell(&p.command),
        charts,
    };
    let mut tt = TinyTemplate::new();
    // Markdown, not HTML: cells are escaped for markdown by `cell` above.
    tt.set_default_formatter(&tinytemplate::format_unescaped);
    tt.add_template("report", TEMPLATE)
        .expect("the built-in template parses");
    tt.render("report", &context)
        .expect("the built-in template renders its own context")
}

/// Renders the summary as markdown to be written into the folder `written_in`, with links to
/// the SVG charts found in `charts_dir`, each relative to `written_in` (so the links of
/// `report --format markdown > examples/sample_output/REPORT.md` resolve, whatever the
/// working directory was). Charts missing on disk are not linked.
pub fn render_linked(summary: &Summary, charts_dir: &Path, written_in: &Path) -> String {
    let prefix = relative_to(written_in, charts_dir).unwrap_or_else(|| charts_dir.to_path_buf());
    render_groups(summary, chart_groups(summary, charts_dir, &prefix))
}

/// `to` as a path from the folder `from`, both resolved on disk (`..` where they part);
/// `None` when either does not exist or they share no root.
fn relative_to(from: &Path, to: &Path) -> Option<std::path::PathBuf> {
    let from = from.canonicalize().ok()?;
    let to = to.canonicalize().ok()?;
    let (f, t): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return None;
    }
    let mut path = std::path::PathBuf::new();
    for _ in common..f.len() {
        path.push("..");
    }
    for c in &t[common..] {
        path.push(c);
    }
    Some(path)
}

/// The charts present in `dir`, grouped: the run's first, then each workload's; each linked as
/// `prefix` joined with its file name.
fn chart_groups(summary: &Summary, dir: &Path, prefix: &Path) -> Vec<ChartGroup> {
    let link = |(file, title): (String, &str)| {
        let path = prefix.join(&file);
        dir.join(&file).is_file().then(|| ChartLink {
            title: title.to_string(),
            // Markdown links use `/` whatever the platform, and a space would end the link.
            path: path
                .to_string_lossy()
                .replace('\\', "/")
                .replace(' ', "%20")
                .replace(')', "%29"),
        })
    };
    let mut groups = vec![ChartGroup {
        heading: "Run".to_string(),
        links: RunChart::ALL
            .iter()
            .filter_map(|c| link((c.file_name(), c.title())))
            .collect(),
    }];
    for name in summary.workloads.keys() {
        groups.push(ChartGroup {
            heading: cell(name),
            links: WorkloadChart::ALL
                .iter()
                .filter_map(|c| link((c.file_name(name), c.title())))
                .collect(),
        });
    }
    groups.retain(|g| !g.links.is_empty());
    groups
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::PathBuf;

    #[test]
    fn a_folder_is_reached_from_its_sibling_its_parent_and_itself() {
        let root = tempfile::tempdir().unwrap();
        let results = root.path().join("a/results");
        let beside = root.path().join("a/reports/ci");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::create_dir_all(&beside).unwrap();
        assert_eq!(
            relative_to(&beside, &results),
            Some(PathBuf::from("../../results"))
        );
        assert_eq!(
            relative_to(&root.path().join("a"), &results),
            Some(PathBuf::from("results"))
        );
        assert_eq!(relative_to(&results, &results), Some(PathBuf::new()));
        // A folder that is not there has no path to it.
        assert_eq!(relative_to(&root.path().join("gone"), &results), None);
    }
}
