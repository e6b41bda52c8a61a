//! Stopping a run keeps what it measured: SIGINT, a second SIGINT, and kill -9, sent to a real
//! `sagellm-benchmark run` benchmarking the scripted test server on 127.0.0.1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sagellm_test_server::{Script, TestServer};

/// A server slow enough to interrupt: each request streams 10 chunks 100 ms apart (about 1 s).
fn slow_server() -> TestServer {
    let script = Script::paced(100, 100);
    TestServer::start(script, 1).unwrap()
}

/// `slow`: 40 requests of 10 tokens, 4 in flight, about 10 s in all. `quick`: 2 requests.
fn config(dir: &Path) -> String {
    let path = dir.join("workloads.toml");
    std::fs::write(
        &path,
        "[workloads.quick]\nprompt_tokens = 8\noutput_tokens = 2\nnum_requests = 2\nwarmup_requests = 0\n\n\
         [workloads.slow]\nprompt_tokens = 8\noutput_tokens = 10\nnum_requests = 40\nconcurrency = 4\nwarmup_requests = 0\n",
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn start_run(server: &TestServer, dir: &Path, workloads: &str, grace: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--backend",
            "openai",
            "--base-url",
            &server.url(),
            "--no-metrics",
            "-q",
        ])
        .args([
            "--workload",
            workloads,
            "--config",
            &config(dir),
            "--grace-period",
            grace,
        ])
        .args(["-o", dir.join("out").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `file` holds at least `lines` lines (records appended as requests finish).
fn wait_for_lines(file: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(file) {
            if text.lines().count() >= lines {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never reached {lines} lines", file.display());
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[path = "common/files.rs"]
mod files;

use files::{json, records};

#[test]
fn sigint_stops_sending_finishes_requests_in_flight_and_writes_everything() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let child = start_run(&server, dir.path(), "quick,slow", "20");
    wait_for_lines(&out.join("slow_requests.jsonl"), 6);
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("Run incomplete (interrupted by SIGINT)"),
        "{stderr}"
    );

    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["incomplete_reason"], "interrupted by SIGINT");
    assert_eq!(summary["workloads"]["quick"]["complete"], true);
    let slow = json(&out.join("slow_metrics.json"));
    assert_eq!(slow["complete"], false);
    // Stopped early, but every request that was sent finished within the grace period: none
    // failed, and every one of them is on disk.
    let recorded = records(&out.join("slow_requests.jsonl"));
    let total = slow["total_requests"].as_u64().unwrap();
    assert!((6..40).contains(&total), "{total} requests");
    assert_eq!(recorded.len() as u64, total);
    assert_eq!(slow["failed_requests"], 0);
    assert!(recorded
        .iter()
        .all(|r| r["success"] == true && r["output_tokens"] == 10));

    // `report` reads the incomplete run and says so.
    let report = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "report",
            "-i",
            out.join("benchmark_summary.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(report.status.success());
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        text.contains("INCOMPLETE RUN: interrupted by SIGINT"),
        "{text}"
    );
    assert!(text.contains("slow cut short"), "{text}");
}

#[test]
fn a_second_sigint_stops_at_once() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A grace period far longer than the test: only the second signal can end the run soon.
    let mut child = start_run(&server, dir.path(), "slow", "600");
    wait_for_lines(&out.join("slow_requests.jsonl"), 2);
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "took {:?}",
        second.elapsed()
    );
    // The records appended before the stop are intact.
    assert!(records(&out.join("slow_requests.jsonl")).len() >= 2);
}

#[test]
fn kill_9_loses_only_the_requests_in_flight() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = start_run(&server, dir.path(), "quick,slow", "20");
    wait_for_lines(&out.join("slow_requests.jsonl"), 8);
    signal(&child, "-KILL");
    child.wait().unwrap();

    // The finished workload's files are complete; the summary written after it says the run
    // was not finished.
    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["workloads"]["quick"]["total_requests"], 2);
    // Every request of `slow` that finished before the kill is on disk, whole.
    let recorded = records(&out.join("slow_requests.jsonl"));
    assert!(recorded.len() >= 8);
    assert!(recorded.iter().all(|r| r["success"] == true));
    let report = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "report",
            "-i",
            out.join("benchmark_summary.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&report.stdout).contains("INCOMPLETE RUN"));
}

/// Whether every file a run left in `dir` is whole: JSON that parses, JSON lines of which only
/// the last may be cut short (the requests log is appended a line at a time), SVG and HTML that
/// end. A killed writer's hidden temporary file (`.<name>.<random>.tmp`, or the folder's write
/// probe) is allowed here; the next run into the folder removes it.
fn assert_whole_files(dir: &Path, killed_after: Duration) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // `previous-<time>/`: an earlier run's files, moved aside whole.
            assert_whole_files(&path, killed_after);
            continue;
        }
        if name.starts_with('.') {
            let leftover = name.ends_with(".tmp") || name.starts_with(".sagellm-write-probe-");
            assert!(
                leftover || name == ".sagellm-bench.lock",
                "{name} after a kill at {killed_after:?}"
            );
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let context = format!("{name}, killed after {killed_after:?}:\n{text}");
        if name.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect(&context);
        } else if name.ends_with(".jsonl") {
            let lines: Vec<&str> = text.lines().collect();
            let whole = lines.len().saturating_sub(1);
            for line in &lines[..whole] {
                serde_json::from_str::<serde_json::Value>(line).expect(&context);
            }
        } else if name.ends_with(".svg") {
            assert!(text.trim_end().ends_with("</svg>"), "{context}");
        } else if name.ends_with(".html") {
            assert!(text.trim_end().ends_with("</html>"), "{context}");
        } else {
            panic!("an unexpected file: {context}");
        }
    }
}

/// Files are written without a flush each (one flush ends the run), so this checks that a kill
/// at any moment of a whole Year-1 mock run, its finishing included, still leaves each file old
/// or new, never half-written.
#[test]
fn kill_9_at_any_moment_of_a_run_leaves_only_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    for step in 0..24u64 {
        let out = dir.path().join(format!("out{step}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
            .args([
                "run",
                "--workload",
                "year1",
                "--backend",
                "mock",
                "-q",
                "-o",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The run takes some tens of milliseconds: from before it starts to after it ends.
        let after = Duration::from_millis(step * 3);
        std::thread::sleep(after);
        let _ = child.kill();
        child.wait().unwrap();
        if out.is_dir() {
            assert_whole_files(&out, after);
        }
    }

    // A killed writer's temporary file is removed by the next run into the folder.
    let out = dir.path().join("out0");
    std::fs::create_dir_all(&out).unwrap();
    let leftover = out.join(".index.html.a1B2c3.tmp");
    std::fs::write(&leftover, "<!DOCTYPE html><html><bo").unwrap();
    let probe = out.join(".sagellm-write-probe-X5kw5x");
    std::fs::write(&probe, "").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args([
            "run",
            "--workload",
            "short",
            "--backend",
            "mock",
            "-q",
            "-o",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!leftover.exists(), "the temporary file was left");
    assert!(!probe.exists(), "the write probe was left");
    assert_whole_files(&out, Duration::MAX);
}

#[path = "common/raw_server.rs"]
mod raw_server;

/// Waits until `seen` (the raw server's log of request lines) holds a generation request, a
/// line starting `POST /v1/`.
fn wait_for_post(seen: &std::sync::Mutex<Vec<String>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        // A generation request: the backend's probe of /tokenize goes first, before warm-up.
        if seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("POST /v1/"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no request reached the server");
}

#[test]
fn sigint_during_a_stalled_warm_up_honours_the_grace_period() {
    // Reads each request and never answers: the warm-up request waits for the request timeout
    // (5 minutes by default) unless the interrupt stops it.
    let (url, seen) = raw_server::serve(|_, _| std::thread::sleep(Duration::from_secs(600)));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warm.toml");
    std::fs::write(
        &config,
        "[workloads.warm]\nprompt_tokens = 8\noutput_tokens = 4\nnum_requests = 2\nwarmup_requests = 1\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["run", "--backend", "openai", "--base-url", &url])
        .args(["--model", "m", "--no-metrics", "-q", "--workload", "warm"])
        .arg("--config")
        .arg(&config)
        .args(["--grace-period", "1", "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_post(&seen);
    let sent = Instant::now();
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // One second of grace, not the five minutes of the request timeout (the bound is loose:
    // this checks which of the two was waited for, not how fast the tool is).
    assert!(
        sent.elapsed() < Duration::from_secs(60),
        "took {:?}: {stderr}",
        sent.elapsed()
    );
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("warm-up request 0 abandoned"), "{stderr}");
    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], false);
    assert_eq!(summary["incomplete_reason"], "interrupted by SIGINT");
}

#[test]
fn compare_on_sigint_stops_and_writes_what_it_measured() {
    let fast = TestServer::start(Script::default(), 1).unwrap();
    let slow = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let child = Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
        .args(["compare", "--no-metrics", "--model", "m", "-q"])
        .args(["--target", &format!("fast={}", fast.url())])
        .args(["--target", &format!("slow={}", slow.url())])
        .args(["--workload", "slow", "--config", &config(dir.path())])
        .args(["--grace-period", "20", "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(&out.join("slow").join("slow_requests.jsonl"), 4);
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("Comparison incomplete (interrupted by SIGINT)")
            && stderr.contains("slow (cut short)"),
        "{stderr}"
    );
    // Both targets are compared: the whole first one and what the second measured.
    let comparison = std::fs::read_to_string(out.join("comparison.json")).unwrap();
    assert!(comparison.contains("fast") && comparison.contains("slow"));
    let cut = json(&out.join("slow").join("benchmark_summary.json"));
    assert_eq!(cut["complete"], false);
    let total = cut["workloads"]["slow"]["total_requests"].as_u64().unwrap();
    assert!((4..40).contains(&total), "{total}");
    assert_eq!(cut["workloads"]["slow"]["failed_requests"], 0);
    assert_eq!(
        json(&out.join("fast").join("benchmark_summary.json"))["complete"],
        true
    );
}
