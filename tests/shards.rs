//! `run --shard K/N` and `merge`: shards run as local processes, merged, against one run of the
//! whole, on the mock (deterministic) and against the scripted test server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use sagellm_test_server::{Script, TestServer};

#[path = "common/files.rs"]
mod files;
use files::{json, records};

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn spawn(out: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(["run", "-q", "-o"])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(out: &Path, args: &[&str]) -> Output {
    spawn(out, args).wait_with_output().unwrap()
}

/// `count` shards started together (a barrier), each with `args`; their folders.
fn shards(dir: &Path, count: usize, args: &[&str]) -> Vec<PathBuf> {
    let barrier = dir.join("barrier");
    let children: Vec<(PathBuf, Child)> = (0..count)
        .map(|k| {
            let out = dir.join(format!("shard-{k}"));
            let shard = format!("{k}/{count}");
            let mut all = vec!["--shard", &shard, "--barrier", barrier.to_str().unwrap()];
            all.extend_from_slice(args);
            (out.clone(), spawn(&out, &all))
        })
        .collect();
    children
        .into_iter()
        .map(|(out, child)| {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            out
        })
        .collect()
}

fn merge(dirs: &[PathBuf], out: &Path) -> Output {
    Command::new(BIN)
        .args(["merge", "-q", "-o"])
        .arg(out)
        .args(dirs)
        .output()
        .unwrap()
}

/// A test server with this TTFT and gap between tokens, ms.
fn server(ttft_ms: u64, itl_ms: u64) -> TestServer {
    TestServer::start(Script::paced(ttft_ms, itl_ms), 2).unwrap()
}

/// `run` flags for `requests` requests of `short` at `concurrency` against `server`.
fn server_args(server: &TestServer, requests: usize, concurrency: usize) -> Vec<String> {
    let url = server.url();
    let (requests, concurrency) = (requests.to_string(), concurrency.to_string());
    [
        "--workload",
        "short",
        "--backend",
        "openai",
        "--base-url",
        &url,
        "--no-metrics",
        "--num-requests",
        &requests,
        "--concurrency",
        &concurrency,
    ]
    .map(String::from)
    .to_vec()
}

fn by_index(path: &Path) -> Vec<serde_json::Value> {
    let mut r = records(path);
    r.sort_by_key(|r| r["index"].as_u64());
    r
}

#[test]
fn one_two_and_four_mock_shards_merge_to_the_requests_of_one_run() {
    // One run sends 8 requests one at a time; N shards send them N at a time, one each, every
    // shard on a mock engine of its own. A request alone on an engine takes the same time
    // whoever sends it, so every request's figures, and so every percentile, are one run's.
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--workload",
        "short",
        "--backend",
        "mock",
        "--num-requests",
        "8",
    ];
    let whole = dir.path().join("whole");
    let out = run(&whole, &base);
    assert!(out.status.success(), "{}", stderr(&out));
    let one = json(&whole.join("short_input_metrics.json"));
    let one_records = by_index(&whole.join("short_input_requests.jsonl"));
    for n in [1usize, 2, 4] {
        let runs = dir.path().join(format!("n{n}"));
        let concurrency = n.to_string();
        let mut args = base.to_vec();
        args.extend(["--concurrency", &concurrency]);
        let folders = shards(&runs, n, &args);
        // Each shard sent its own requests: i mod N = K.
        for (k, folder) in folders.iter().enumerate() {
            let own: Vec<u64> = by_index(&folder.join("short_input_requests.jsonl"))
                .iter()
                .map(|r| r["index"].as_u64().unwrap())
                .collect();
            let expected: Vec<u64> = (0..8).filter(|i| i % n == k).map(|i| i as u64).collect();
            assert_eq!(own, expected, "shard {k}/{n}");
        }
        let merged = runs.join("merged");
        let out = merge(&folders, &merged);
        assert!(out.status.success(), "{}", stderr(&out));
        let m = json(&merged.join("short_input_metrics.json"));
        for key in [
            "total_requests",
            "successful_requests",
            "total_input_tokens",
            "total_output_tokens",
            "p50_ttft_ms",
            "p99_ttft_ms",
            "avg_tbt_ms",
            "p50_itl_ms",
            "p99_itl_ms",
            "p99_tpot_ms",
            "p50_e2el_ms",
            "p99_e2el_ms",
        ] {
            assert_eq!(m[key], one[key], "{key} with {n} shards");
        }
        let merged_records = by_index(&merged.join("short_input_requests.jsonl"));
        for (a, b) in merged_records.iter().zip(&one_records) {
            assert_eq!(a["token_times_ms"], b["token_times_ms"]);
        }
        // The wall time is what differs: N shards send N at a time, so it is 1/N of one run's
        // (the mock's clock is virtual: every shard's time starts at zero together).
        let wall = m["total_time_s"].as_f64().unwrap();
        let expected = one["total_time_s"].as_f64().unwrap() / n as f64;
        assert!((wall - expected).abs() < 1e-9, "{wall} vs {expected}");
        let report = json(&merged.join("merge.json"));
        assert_eq!(report["shard_count"], n);
        assert_eq!(report["missing"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn an_open_loop_keeps_every_request_at_its_global_time() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--workload",
        "short",
        "--backend",
        "mock",
        "--num-requests",
        "6",
        "--request-rate",
        "0.5",
        "--arrival",
        "constant",
    ];
    let whole = dir.path().join("whole");
    assert!(run(&whole, &args).status.success());
    let folders = shards(dir.path(), 3, &args);
    let merged = dir.path().join("merged");
    assert!(merge(&folders, &merged).status.success());
    let (one, all) = (
        by_index(&whole.join("short_input_requests.jsonl")),
        by_index(&merged.join("short_input_requests.jsonl")),
    );
    for (a, b) in one.iter().zip(&all) {
        // Request i is scheduled at 2i s whichever shard sends it.
        assert_eq!(a["scheduled_ms"], b["scheduled_ms"]);
        assert_eq!(a["ttft_ms"], b["ttft_ms"]);
    }
    let m = json(&merged.join("short_input_metrics.json"));
    assert_eq!(m["client_overloaded"], false);
}

#[test]
fn capped_shards_merge_to_the_whole_cap_and_keep_the_extra_percentiles() {
    // 12 requests due 10 ms apart, each taking over a second on the mock: under a cap of 4
    // split over two shards (2 each), most wait for a slot. The merge adds the shares back
    // to 4, adds up the waits, does not call the cap's waits the client's falling behind,
    // and computes the asked p90 again over all 12 requests.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--workload",
        "short",
        "--backend",
        "mock",
        "--num-requests",
        "12",
        "--request-rate",
        "100",
        "--arrival",
        "constant",
        "--max-concurrency",
        "4",
        "--percentiles",
        "90",
    ];
    let folders = shards(dir.path(), 2, &args);
    let shard_waits: u64 = folders
        .iter()
        .map(|f| {
            let m = json(&f.join("short_input_metrics.json"));
            assert_eq!(m["max_concurrency"], 2);
            m["capped_requests"].as_u64().unwrap()
        })
        .sum();
    assert!(shard_waits >= 4, "{shard_waits}");
    let merged = dir.path().join("merged");
    let out = merge(&folders, &merged);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = json(&merged.join("short_input_metrics.json"));
    assert_eq!(m["max_concurrency"], 4);
    assert_eq!(m["capped_requests"], shard_waits);
    assert_eq!(m["client_overloaded"], false);
    assert!(m["schedule_lag_p99_ms"].as_f64().unwrap() > 1000.0);
    assert_eq!(m["total_requests"], 12);
    assert!(m["p90_ttft_ms"].as_f64().is_some() && m["p90_e2el_ms"].as_f64().is_some());
}

#[test]
fn sessions_go_whole_to_one_shard() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--workload",
        "short",
        "--backend",
        "mock",
        "--sessions",
        "4",
        "--turns",
        "3",
        "--concurrency",
        "2",
    ];
    let folders = shards(dir.path(), 2, &args);
    for (k, folder) in folders.iter().enumerate() {
        let sessions: Vec<u64> = by_index(&folder.join("short_input_requests.jsonl"))
            .iter()
            .map(|r| r["session"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = [k, k, k, k + 2, k + 2, k + 2]
            .iter()
            .map(|&s| s as u64)
            .collect();
        assert_eq!(sessions, expected, "shard {k}");
    }
    let merged = dir.path().join("merged");
    assert!(merge(&folders, &merged).status.success());
    let m = json(&merged.join("short_input_metrics.json"));
    assert_eq!(m["total_requests"], 12);
    assert_eq!(m["sessions"]["completed_sessions"], 4);
    assert_eq!(m["turns"].as_array().unwrap().len(), 3);
}

#[test]
fn four_shards_at_16_each_merge_to_one_run_at_64_against_a_server() {
    let server = server(30, 4);
    let dir = tempfile::tempdir().unwrap();
    let args = server_args(&server, 256, 64);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let whole = dir.path().join("whole");
    let out = run(&whole, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let folders = shards(dir.path(), 4, &args);
    for folder in &folders {
        // Each shard kept 64 / 4 = 16 requests in flight.
        assert_eq!(
            json(&folder.join("short_input_metrics.json"))["total_requests"],
            64
        );
    }
    let merged = dir.path().join("merged");
    let out = merge(&folders, &merged);
    assert!(out.status.success(), "{}", stderr(&out));
    let (one, m) = (
        json(&whole.join("short_input_metrics.json")),
        json(&merged.join("short_input_metrics.json")),
    );
    assert_eq!(m["total_requests"], 256);
    assert_eq!(m["successful_requests"], 256);
    assert_eq!(m["total_output_tokens"], one["total_output_tokens"]);
    // The server's pace is scripted (30 ms + 127 × 4 ms a request, whatever the load), so the
    // whole's throughput is the sum of the shards': within 20 % on a shared machine.
    let (a, b) = (
        one["output_throughput_tps"].as_f64().unwrap(),
        m["output_throughput_tps"].as_f64().unwrap(),
    );
    assert!(
        (b / a - 1.0).abs() < 0.2,
        "merged {b} tok/s, one run {a} tok/s"
    );
    assert!(
        (m["p50_ttft_ms"].as_f64().unwrap() - one["p50_ttft_ms"].as_f64().unwrap()).abs() < 15.0
    );
}

#[test]
fn a_killed_shard_is_named_and_the_others_are_merged_marked_incomplete() {
    let server = server(5, 20);
    let dir = tempfile::tempdir().unwrap();
    let args = server_args(&server, 40, 4);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Shards 0 and 1 finish; shard 2 is killed once it has recorded a few requests; shard 3
    // never runs.
    let folder = |k: usize| dir.path().join(format!("shard-{k}"));
    let mut children: Vec<Child> = (0..3)
        .map(|k| {
            let shard = format!("{k}/4");
            let mut all = vec!["--shard", shard.as_str(), "--start-at", "0"];
            all.extend_from_slice(&args);
            spawn(&folder(k), &all)
        })
        .collect();
    let killed = folder(2).join("short_input_requests.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while records_in(&killed) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "shard 2 recorded nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    children[2].kill().unwrap();
    let _ = children[2].wait();
    for child in children.drain(..2) {
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let recorded = records_in(&killed);
    let merged = dir.path().join("merged");
    let out = merge(&[folder(0), folder(1), folder(2)], &merged);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("[3] missing") && err.contains("[2] did not finish"),
        "{err}"
    );
    let report = json(&merged.join("merge.json"));
    assert_eq!(report["missing"], serde_json::json!([3]));
    assert_eq!(report["incomplete"], serde_json::json!([2]));
    let m = json(&merged.join("short_input_metrics.json"));
    // Shards 0 and 1 own 10 requests each; shard 2's recorded ones are in too.
    assert_eq!(m["total_requests"].as_u64().unwrap(), 20 + recorded as u64);
    assert_eq!(m["complete"], false);
    let summary = json(&merged.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], false);
}

fn records_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.ends_with('}')).count())
        .unwrap_or(0)
}

#[test]
fn shards_of_different_runs_or_the_same_shard_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--workload",
        "short",
        "--backend",
        "mock",
        "--num-requests",
        "4",
        "--concurrency",
        "2",
    ];
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    assert!(run(&a, &[&["--shard", "0/2"][..], &base].concat())
        .status
        .success());
    assert!(run(
        &b,
        &[&["--shard", "1/2", "--seed", "9"][..], &base].concat()
    )
    .status
    .success());
    assert!(run(&c, &[&["--shard", "0/2"][..], &base].concat())
        .status
        .success());
    let cases: &[(&[&PathBuf], &[&str])] = &[
        (&[&a, &b], &["different runs", "seed 9", "seed 42"]),
        (&[&a, &c], &["both shard 0/2"]),
    ];
    for (folders, expected) in cases {
        let folders: Vec<PathBuf> = folders.iter().map(|p| p.to_path_buf()).collect();
        let out = merge(&folders, &dir.path().join("m"));
        assert!(!out.status.success());
        for e in *expected {
            assert!(stderr(&out).contains(e), "{}", stderr(&out));
        }
    }
    let out = merge(std::slice::from_ref(&a), &a);
    assert!(
        stderr(&out).contains("folder of its own"),
        "{}",
        stderr(&out)
    );
    let plain = dir.path().join("plain");
    assert!(run(&plain, &base).status.success());
    let sequential = ["--workload", "short", "--backend", "mock", "--shard", "0/2"];
    let out = run(&dir.path().join("s"), &sequential);
    assert!(
        stderr(&out).contains("concurrency 1 cannot be divided among 2 shards"),
        "{}",
        stderr(&out)
    );
    let out = merge(&[plain], &dir.path().join("m"));
    assert!(stderr(&out).contains("shard.json"), "{}", stderr(&out));
    // Bad shard flags are refused before anything runs.
    for (args, expected) in [
        (&["--shard", "2/2"][..], "K/N"),
        (&["--shard", "auto"][..], "JOB_COMPLETION_INDEX"),
        (
            &["--shard", "0/8"][..],
            "4 requests cannot be split among 8 shards",
        ),
        (&["--start-at", "5"][..], "--shard"),
    ] {
        let out = run(&dir.path().join("x"), &[args, &base].concat());
        assert!(
            !out.status.success() && stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A Kubernetes Indexed Job's pod: its index from the environment, the count from a flag.
    let out = Command::new(BIN)
        .args(["run", "-q", "--shard", "auto", "--shard-count", "2", "-o"])
        .arg(dir.path().join("k8s"))
        .args(base)
        .env("JOB_COMPLETION_INDEX", "1")
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        json(&dir.path().join("k8s/shard.json"))["shard"]["index"],
        1
    );
}
