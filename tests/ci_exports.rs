//! `report --format bencher | github-smaller | github-bigger | github-summary` on a real
//! Year-1 mock run: the files CI tools read, in their documented shapes.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn year1(dir: &Path) {
    ok(Command::new(BIN)
        .args(["run", "-q", "-o"])
        .arg(dir)
        .output()
        .unwrap());
}

fn report(dir: &Path, format: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["report", "--format", format, "--input"])
        .arg(dir.join("benchmark_summary.json"))
        .args(extra)
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bencher_metric_format_has_every_workload_in_its_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    year1(dir.path());
    let bmf = json(&ok(report(dir.path(), "bencher", &[])));
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("short_input_metrics.json")).unwrap(),
    )
    .unwrap();
    // BMF: an object of benchmarks, each an object of measures, each with a numeric value and
    // optional numeric lower_value and upper_value.
    for (benchmark, measures) in bmf.as_object().unwrap() {
        for (measure, m) in measures.as_object().unwrap() {
            assert!(m["value"].is_number(), "{benchmark} {measure}");
            for bound in ["lower_value", "upper_value"] {
                assert!(m.get(bound).map_or(true, |v| v.is_number()));
            }
            let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
            assert!(keys
                .iter()
                .all(|k| ["value", "lower_value", "upper_value"].contains(&k.as_str())));
        }
    }
    let ttft = &bmf["short_input/ttft"]["latency"];
    let ns = |key: &str| metrics[key].as_f64().unwrap() * 1e6;
    assert!((ttft["value"].as_f64().unwrap() - ns("avg_ttft_ms")).abs() < 1e-3);
    assert!((ttft["upper_value"].as_f64().unwrap() - ns("p99_ttft_ms")).abs() < 1e-3);
    assert_eq!(
        bmf["stress_test/output_tokens"]["throughput"]["value"],
        json_of(dir.path(), "stress_test")["output_throughput_tps"]
    );
    assert_eq!(bmf["long_input"]["successful_requests"]["value"], 3.0);
}

fn json_of(dir: &Path, workload: &str) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{workload}_metrics.json"))).unwrap(),
    )
    .unwrap()
}

#[test]
fn github_action_benchmark_files_list_name_unit_and_value_by_direction() {
    let dir = tempfile::tempdir().unwrap();
    year1(dir.path());
    let smaller = json(&ok(report(dir.path(), "github-smaller", &[])));
    let bigger = json(&ok(report(dir.path(), "github-bigger", &[])));
    for entries in [&smaller, &bigger] {
        let entries = entries.as_array().unwrap();
        assert!(!entries.is_empty());
        for e in entries {
            assert!(
                e["name"].is_string() && e["unit"].is_string() && e["value"].is_number(),
                "{e}"
            );
        }
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&smaller).contains(&"short_input TTFT p99 (p99_ttft_ms)".to_string()));
    assert!(names(&bigger)
        .contains(&"stress_test Output throughput (output_throughput_tps)".to_string()));
    assert!(!names(&bigger).iter().any(|n| n.contains("ttft")));
}

#[test]
fn a_job_summary_is_appended_to_github_step_summary_with_the_verdicts() {
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    year1(old.path());
    year1(new.path());
    let summary_file = new.path().join("step_summary.md");
    std::fs::write(&summary_file, "# earlier step\n").unwrap();
    let out = ok(Command::new(BIN)
        .args(["report", "--format", "github-summary", "--input"])
        .arg(new.path().join("benchmark_summary.json"))
        .arg("--baseline")
        .arg(old.path())
        .env("GITHUB_STEP_SUMMARY", &summary_file)
        .output()
        .unwrap());
    assert!(out.stdout.is_empty(), "written to the file, not printed");
    let text = std::fs::read_to_string(&summary_file).unwrap();
    assert!(
        text.starts_with("# earlier step\n"),
        "appended, not overwritten"
    );
    assert!(text.contains("| TTFT avg (ms) |"), "{text}");
    // The mock is deterministic: the same run again changes nothing.
    assert!(
        text.contains("no significant change") || text.contains("No significant change"),
        "{text}"
    );
    assert!(!text.contains(".svg"), "no links into the runner's disk");
    // Without the variable, the same text goes to stdout.
    let printed = ok(report(new.path(), "github-summary", &[]));
    assert!(String::from_utf8_lossy(&printed.stdout).contains("| TTFT avg (ms) |"));
}
