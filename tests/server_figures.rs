//! Server-side timings through a whole run: the test server exports vLLM's queue-time and TTFT
//! histograms (its scripted queue time, and the TTFT it measured itself); the run reads their
//! growth over the workload as `server_avg_queue_ms` and `server_avg_ttft_ms`, and what the
//! client adds on top as `ttft_outside_server_ms`.

use std::process::Command;
use std::time::Duration;

use sagellm_test_server::{Script, TestServer};

#[test]
fn server_timings_are_the_histograms_means() {
    let server = TestServer::start(
        Script {
            queue_time: Duration::from_millis(4),
            ttft: Duration::from_millis(26),
            itl: Duration::from_millis(1),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        "[workloads.timed]\nprompt_tokens = 16\noutput_tokens = 4\nnum_requests = 10\n\
         concurrency = 2\nwarmup_requests = 2\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--backend",
            "vllm",
            "--quiet",
            "--base-url",
            &server.url(),
        ])
        .args(["--workload", "timed", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timed_metrics.json")).unwrap())
            .unwrap();
    let get = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {m}"));
    // The queue time is scripted exactly; the warm-up's two requests are outside the window.
    assert!((get("server_avg_queue_ms") - 4.0).abs() < 1e-6, "{m}");
    // The server's TTFT: 4 ms queued + 26 ms, met within the timer's millisecond and noise.
    let server_ttft = get("server_avg_ttft_ms");
    assert!((30.0..33.0).contains(&server_ttft), "{server_ttft}");
    // Ours is the server's plus loopback and the client: never less, and close.
    let outside = get("ttft_outside_server_ms");
    assert!(
        (get("avg_ttft_ms") - server_ttft - outside).abs() < 1e-6,
        "{m}"
    );
    assert!((-0.5..5.0).contains(&outside), "{outside}");

    // The table shows them, with the connections.
    let table = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["report", "--input"])
        .arg(out.join("benchmark_summary.json"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("Server queue / TTFT avg (ms)"), "{table}");
    assert!(table.contains("4.00 / "), "{table}");
    assert!(table.contains("Connections opened / retried"), "{table}");
}
