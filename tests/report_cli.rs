//! `report --format html` and `report --format markdown` from a saved run folder.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn run_into(dir: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["run", "-q", "-o"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn report(args: &[&str]) -> String {
    let out = Command::new(BIN).arg("report").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn report_html_rewrites_the_page_and_charts_from_saved_json() {
    let dir = tempfile::tempdir().unwrap();
    run_into(dir.path());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("svg" | "html")
        ) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let summary = dir.path().join("benchmark_summary.json");
    let printed = report(&["--format", "html", "-i", summary.to_str().unwrap()]);
    assert!(printed.contains("index.html"), "{printed}");
    assert!(dir.path().join("index.html").is_file());
    assert!(dir.path().join("stress_test_timeline.svg").is_file());
    assert!(dir.path().join("run_key_metrics.svg").is_file());

    // Elsewhere, with --output.
    let other = tempfile::tempdir().unwrap();
    report(&[
        "--format",
        "html",
        "-i",
        summary.to_str().unwrap(),
        "-o",
        other.path().to_str().unwrap(),
    ]);
    assert!(other.path().join("index.html").is_file());
}

#[test]
fn report_html_without_the_request_records_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    run_into(dir.path());
    std::fs::remove_file(dir.path().join("long_input_requests.jsonl")).unwrap();
    let out = Command::new(BIN)
        .args(["report", "--format", "html", "-i"])
        .arg(dir.path().join("benchmark_summary.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("long_input_requests.jsonl") && err.contains("re-run"),
        "{err}"
    );
}

#[test]
fn markdown_links_the_charts_relative_to_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    run_into(dir.path());
    let summary = dir.path().join("benchmark_summary.json");
    let md = report(&["--format", "markdown", "-i", summary.to_str().unwrap()]);
    // Printed to a pipe, no file to be relative to: relative to the results folder, the place
    // for a REPORT.md (tests/honest_output.rs redirects it elsewhere).
    let link = "[TTFT distribution](short_input_ttft_cdf.svg)";
    assert!(md.contains("## Charts"), "{md}");
    assert!(md.contains(link), "{md}");
    assert!(md.contains("run_key_metrics.svg"), "{md}");
}
