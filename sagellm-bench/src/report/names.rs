//! Every file and folder name a run writes, in one place: the JSON files, the charts, the
//! comparisons and the `cargo bench` baselines. Readers (`report --format html`, `compare
//! --result`, `--baseline`) find files through the same functions.

use std::path::{Path, PathBuf};

use crate::workload::is_name_char;

/// The run's summary: every workload's metrics, the overall counts, provenance.
pub const SUMMARY_FILE: &str = "benchmark_summary.json";

/// The side-by-side comparison of `compare`, as JSON and as markdown.
pub const COMPARISON_JSON: &str = "comparison.json";
/// See [`COMPARISON_JSON`].
pub const COMPARISON_MD: &str = "comparison.md";

/// A capacity search's answer and every probe (`sagellm-benchmark search`).
pub const SEARCH_FILE: &str = "search.json";
/// A capacity search's chart (`report::svg::SearchChart::Capacity`).
pub const SEARCH_CHART_FILE: &str = "search_capacity.svg";
/// The folder under a search's output folder holding one run folder per probe.
pub const PROBES_DIR: &str = "probes";

/// The run folder of one probe of a search: `<dir>/probes/<probe workload>/`.
pub fn probe_dir(dir: &Path, probe_workload: &str) -> PathBuf {
    dir.join(PROBES_DIR).join(file_stem(probe_workload))
}

/// A repeated run's summary over its repetitions (`--num-runs`).
pub const REPEATS_FILE: &str = "repeats.json";

/// The run folder of repetition `i` (1-based) of a repeated run: `<dir>/run_<i>/`.
pub fn repeat_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("run_{i}"))
}

/// A `cargo bench` baseline folder's metrics file.
pub const BASELINE_METRICS_FILE: &str = "metrics.json";
/// A `cargo bench` baseline folder's request records.
pub const BASELINE_REQUESTS_FILE: &str = "requests.jsonl";
/// The baseline name each workload's latest `cargo bench` results are written under.
pub const NEW_RUN: &str = "new";

/// Makes a workload name safe as part of a file name. Names the runner accepted pass unchanged;
/// a hand-edited summary cannot send a file outside its folder.
pub fn file_stem(workload: &str) -> String {
    let stem: String = workload
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    match stem.trim_start_matches('.') {
        "" => "workload".to_string(),
        s => s.to_string(),
    }
}

/// `<workload>_metrics.json`: every aggregate of one workload.
pub fn metrics_file(workload: &str) -> String {
    format!("{}_metrics.json", file_stem(workload))
}

/// `<workload>_requests.jsonl`: one raw record per request.
pub fn requests_file(workload: &str) -> String {
    format!("{}_requests.jsonl", file_stem(workload))
}

/// `<workload>_<chart>.svg`: one chart of one workload, e.g. `short_input_ttft_cdf.svg`.
pub fn workload_chart_file(workload: &str, chart: &str) -> String {
    format!("{}_{chart}.svg", file_stem(workload))
}

/// `<chart>.svg`: one chart of the whole run.
pub fn run_chart_file(chart: &str) -> String {
    format!("{chart}.svg")
}

/// `compare_<workload>_<metric>_cdf.svg`: one metric's distributions in every compared run.
pub fn comparison_chart_file(workload: &str, metric: &str) -> String {
    format!("compare_{}_{metric}_cdf.svg", file_stem(workload))
}

/// `<metric>_vs_<baseline>.svg`, in the workload's baseline folder: the baseline's and the new
/// run's distributions of one metric.
pub fn baseline_chart_file(metric: &str, baseline: &str) -> String {
    format!("{metric}_vs_{baseline}.svg")
}

/// The folder of baseline `name` of `workload` under `root`: `<root>/<workload>/<name>/`.
pub fn baseline_dir(root: &Path, workload: &str, name: &str) -> PathBuf {
    root.join(workload).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stems_cannot_leave_the_folder() {
        assert_eq!(file_stem("short_input"), "short_input");
        assert_eq!(file_stem("../../etc/x"), "_.._etc_x");
        assert_eq!(file_stem("<b>"), "_b_");
        assert_eq!(file_stem(""), "workload");
    }
}
