//! A `vllm bench serve` command line's load flags, pasted: the aliases run, and the metrics
//! JSON says what they asked for. (The vLLM flags this tool spells its own way are refused
//! with the flag to type: tests/bad_input.rs.)

use std::process::Command;

fn metrics(dir: &std::path::Path, workload: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{workload}_metrics.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn vllm_spellings_run_as_ours() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--workload",
            "short",
            "--num-prompts",
            "6",
            "--request-rate",
            "40",
            "--burstiness",
            "0.5",
            "--max-concurrency",
            "2",
            "--metric-percentiles",
            "90,99.9",
            "-q",
            "-o",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(dir.path(), "short_input");
    assert_eq!(m["total_requests"], 6);
    assert_eq!(m["max_concurrency"], 2);
    assert!(m["capped_requests"].as_u64().is_some());
    for key in [
        "p90_ttft_ms",
        "p90_tpot_ms",
        "p90_itl_ms",
        "p90_e2el_ms",
        "p99.9_ttft_ms",
        "p99.9_e2el_ms",
    ] {
        assert!(m[key].as_f64().is_some(), "{key} missing");
    }
    // Every record of the open loop has its scheduled time.
    let records = std::fs::read_to_string(dir.path().join("short_input_requests.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 6);
    assert!(records
        .lines()
        .all(|l| !l.contains("\"scheduled_ms\":null")));

    // --max-concurrency alone is --concurrency: a closed loop, no scheduled times, no cap
    // figures.
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--workload",
            "short",
            "--num-prompts",
            "4",
            "--max-concurrency",
            "3",
            "-q",
            "-o",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let m = metrics(dir.path(), "short_input");
    assert!(m.get("max_concurrency").is_none());
    assert!(m.get("schedule_lag_p99_ms").is_none());
    let records = std::fs::read_to_string(dir.path().join("short_input_requests.jsonl")).unwrap();
    assert!(records.lines().all(|l| l.contains("\"scheduled_ms\":null")));
}

#[test]
fn help_names_vllms_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for words in [
        "--max-concurrency <C>",
        "the same as --concurrency C",
        "--burstiness <B>",
        "--ramp-up-strategy <STRATEGY>",
        "--percentiles <LIST>",
        "--metric-percentiles",
        "--num-prompts",
    ] {
        assert!(help.contains(words), "`{words}` not in run --help:\n{help}");
    }
}
