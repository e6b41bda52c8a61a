//! `compare` against two local servers with different scripted speeds names the faster one,
//! and the same comparison can be rebuilt from the saved results.

use std::process::Command;

use sagellm_test_server::{Script, TestServer};

fn server(ttft_ms: u64, itl_ms: u64) -> TestServer {
    TestServer::start(Script::paced(ttft_ms, itl_ms), 1).unwrap()
}

fn fastest(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("comparison.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(dir.join("comparison.md").is_file());
    // The two runs' distributions, overlaid, one chart per metric of the shared workload.
    for metric in ["ttft", "tpot", "e2el"] {
        let chart = std::fs::read_to_string(dir.join(format!("compare_tiny_{metric}_cdf.svg")))
            .unwrap_or_else(|e| panic!("no {metric} overlay: {e}"));
        assert!(
            chart.contains("slow") && chart.contains("fast"),
            "{metric} overlay lacks a run"
        );
    }
    json
}

#[test]
fn compare_names_the_faster_server_live_and_from_saved_results() {
    let slow = server(30, 6);
    let fast = server(5, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        "[workloads.tiny]\nprompt_tokens = 16\noutput_tokens = 16\nnum_requests = 4\nconcurrency = 2\n",
    )
    .unwrap();
    let out = dir.path().join("live");
    // The slow one first, so "fastest" cannot be the reference by accident.
    let status = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["compare", "--workload", "tiny", "-q"])
        .arg("--target")
        .arg(format!("slow={}", slow.url()))
        .arg("--target")
        .arg(format!("fast={}", fast.url()))
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let json = fastest(&out);
    assert_eq!(json["fastest"], "fast", "{json}");
    assert_eq!(json["workloads"]["tiny"]["fastest"], "fast");
    let rel = json["workloads"]["tiny"]["metrics"]["avg_e2el_ms"]["relative_to_first"]["fast"]
        .as_f64()
        .unwrap();
    assert!(rel < -0.3, "fast is much faster: {rel}");
    // Each server's own TTFT (from its histogram) sits beside ours: 30 ms and 5 ms scripted.
    let server_ttft = &json["workloads"]["tiny"]["metrics"]["server_avg_ttft_ms"]["values"];
    let (slow_ttft, fast_ttft) = (
        server_ttft["slow"].as_f64().unwrap(),
        server_ttft["fast"].as_f64().unwrap(),
    );
    assert!((29.5..34.0).contains(&slow_ttft), "{server_ttft}");
    assert!((4.5..9.0).contains(&fast_ttft), "{server_ttft}");
    assert!(out.join("slow").join("tiny_metrics.json").is_file());

    let saved = dir.path().join("saved");
    let status = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["compare", "-q"])
        .arg("--result")
        .arg(format!("fast={}", out.join("fast").display()))
        .arg("--result")
        .arg(format!("slow={}", out.join("slow").display()))
        .arg("-o")
        .arg(&saved)
        .status()
        .unwrap();
    assert!(status.success());
    let json = fastest(&saved);
    assert_eq!(json["fastest"], "fast", "{json}");
    assert_eq!(json["targets"][0], "fast");
}
