//! The open-files limit (issue #13, class 1), set low in the child's shell before it runs
//! `sagellm-benchmark run` against the scripted test server on 127.0.0.1: a soft limit is
//! raised to the hard one, a closed loop that cannot fit is refused before its first request,
//! and an open loop far above what fits is capped, every request measured, the overflow counted
//! and the client's falling behind reported.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sagellm_test_server::{Script, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

/// `sh -c 'ulimit <limit>; exec sagellm-benchmark run ...'` into `out`.
fn run_with_limit(limit: &str, server: &TestServer, out: &Path, load: &[&str]) -> Output {
    let mut script = format!(
        "ulimit {limit} || exit 99; exec \"$0\" run --backend vllm --no-metrics --model m -q --workload short -o \"$1\" --base-url {}",
        server.url()
    );
    for arg in load {
        script.push(' ');
        script.push_str(arg);
    }
    Command::new("sh")
        .args(["-c", &script, BIN])
        .arg(out)
        .output()
        .unwrap()
}

#[path = "common/files.rs"]
mod files;

use files::{json, records};

#[test]
fn a_low_soft_limit_is_raised_to_the_hard_one_and_every_request_succeeds() {
    let server = TestServer::start(Script::default(), 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 100 connections cannot fit under 64 files; the hard limit (unchanged) allows them.
    let output = run_with_limit(
        "-S -n 64",
        &server,
        &out,
        &["--concurrency", "100", "--num-requests", "200"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let recorded = records(&out.join("short_input_requests.jsonl"));
    assert_eq!(recorded.len(), 200);
    let failed: Vec<&Value> = recorded.iter().filter(|r| r["success"] != true).collect();
    assert!(failed.is_empty(), "{:?}", failed.first());
    assert_eq!(json(&out.join("benchmark_summary.json"))["complete"], true);
}

#[test]
fn a_closed_loop_that_cannot_fit_is_refused_before_any_request() {
    let server = TestServer::start(Script::default(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // `ulimit -n` sets the hard limit too: nothing to raise.
    let output = run_with_limit(
        "-n 64",
        &server,
        &out,
        &["--concurrency", "100", "--num-requests", "200"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for words in [
        "keeps 100 connections open",
        "may open only 64 files",
        "ulimit -n",
        "lower --concurrency to",
    ] {
        assert!(stderr.contains(words), "`{words}` not in: {stderr}");
    }
    assert_eq!(server.requests(), 0, "a request reached the server");
    assert!(!out.exists(), "a refused run left a folder");
}

#[test]
fn an_open_loop_far_above_what_fits_is_capped_and_the_client_falling_behind_reported() {
    // 50 ms a request at 100,000 requests/s: thousands would be in flight, under 64 files.
    let script = Script {
        ttft: Duration::from_millis(50),
        ..Script::default()
    };
    let server = TestServer::start(script, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run_with_limit(
        "-n 64",
        &server,
        &out,
        &["--request-rate", "100000", "--num-requests", "300"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("the client fell behind its schedule"),
        "{stderr}"
    );
    // Every request was measured (none lost to the limit), and every file written.
    let recorded = records(&out.join("short_input_requests.jsonl"));
    assert_eq!(recorded.len(), 300);
    assert!(
        recorded.iter().all(|r| r["success"] == true),
        "{:?}",
        recorded.iter().find(|r| r["success"] != true)
    );
    let metrics = json(&out.join("short_input_metrics.json"));
    assert_eq!(metrics["client_overloaded"], true, "{metrics}");
    let held = metrics["client_held_requests"].as_u64().unwrap();
    assert!(held > 0 && held < 300, "{held}");
    assert!(metrics["schedule_lag_p99_ms"].as_f64().unwrap() > 10.0);
    assert_eq!(json(&out.join("benchmark_summary.json"))["complete"], true);
}
