//! `sagellm-benchmark search` as a user runs it: the answer on the terminal and on disk, the
//! messages of searches that cannot answer, bad flags, and a SIGINT in the middle of a probe
//! against the scripted test server.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sagellm_test_server::{Script, TestServer};

#[path = "common/files.rs"]
mod files;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
}

/// The mock with prefill free: each decode step is 8 ms + 0.4 ms per running sequence, so at
/// concurrency c the TBT is 8 + 0.4 c ms; TBT <= 12.2 ms holds up to c = 10.
fn flat_config(dir: &Path) -> String {
    let path = dir.join("flat.toml");
    std::fs::write(
        &path,
        "[mock]\nprefill_us_per_token = 0.0\nmax_batched_tokens = 65536\n",
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn search(dir: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["search", "--backend", "mock", "--workload", "short"])
        .args(["--config", &flat_config(dir), "--num-requests", "40"])
        .args(["-o", dir.join("out").to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_answer_is_printed_and_written_with_every_probe_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = search(
        dir.path(),
        &["--concurrency", "1..64", "--goodput", "tbt:12.2"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("capacity: concurrency 10 (95% of requests within TBT <= 12.2 ms); concurrency 11 fails:"),
        "{stdout}"
    );
    assert!(stderr.contains("probe c10: pass"), "{stderr}");
    assert!(stderr.contains("probe c11: FAIL"), "{stderr}");
    let answer = files::json(&dir.path().join("out/search.json"));
    assert_eq!(answer["largest_passing"], 10.0);
    assert_eq!(answer["first_failing"], 11.0);
    assert_eq!(answer["complete"], true);
    for probe in answer["probes"].as_array().unwrap() {
        let name = probe["workload"].as_str().unwrap();
        let folder = dir.path().join("out/probes").join(name);
        assert!(
            folder.join(format!("{name}_metrics.json")).is_file(),
            "{name}"
        );
    }
    assert!(dir.path().join("out/search_capacity.svg").is_file());
    // A second search in the folder moves the first one's probes aside, never mixing them.
    let again = search(
        dir.path(),
        &["--concurrency", "4..8", "--goodput", "tbt:12.2"],
    );
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("The earlier search in"),
        "{}",
        text(&again.stderr)
    );
    assert!(!dir.path().join("out/probes/short_input_c1").exists());
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("previous-search-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(dir
        .path()
        .join("out")
        .join(&aside[0])
        .join("probes/short_input_c1/benchmark_summary.json")
        .is_file());
}

#[test]
fn objectives_that_can_never_be_met_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = search(
        dir.path(),
        &["--concurrency", "1..64", "--goodput", "ttft:0.001"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Error: no request met the objectives (TTFT <= 0.001 ms) even one at a time (c1): they cannot be met on this backend; loosen --goodput"),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("no capacity in the range"));
}

#[test]
fn a_range_whose_lowest_point_fails_says_to_start_lower() {
    let dir = tempfile::tempdir().unwrap();
    let out = search(
        dir.path(),
        &["--concurrency", "11..64", "--goodput", "tbt:12.2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "Error: the lowest load of the range, c11, already fails: start the range lower"
        ),
        "{stderr}"
    );
    let answer = files::json(&dir.path().join("out/search.json"));
    assert_eq!(answer["probes"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_search_flags_are_refused_before_any_probe() {
    let dir = tempfile::tempdir().unwrap();
    for (args, words) in [
        (
            &["--concurrency", "8..8", "--goodput", "ttft:5"][..],
            "is empty",
        ),
        (
            &["--concurrency", "1-8", "--goodput", "ttft:5"],
            "give LOW..HIGH",
        ),
        (&["--concurrency", "1..8"], "--goodput"),
        (&["--goodput", "ttft:5"], "--concurrency"),
        (
            &[
                "--concurrency",
                "1..8",
                "--goodput",
                "ttft:5",
                "--slo-fraction",
                "1.5",
            ],
            "--slo-fraction 1.5 must be above 0 and at most 1",
        ),
        (
            &["--concurrency", "1.5..8", "--goodput", "ttft:5"],
            "must be whole numbers",
        ),
        (
            &[
                "--concurrency",
                "1..8",
                "--goodput",
                "ttft:5",
                "--search-step",
                "0",
            ],
            "not a search step",
        ),
    ] {
        let out = search(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!dir.path().join("out/probes").exists(), "{args:?} probed");
    }
}

#[test]
fn help_teaches_the_search() {
    let out = bin().args(["search", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    for words in [
        "--slo-fraction",
        "--search-step",
        "--max-search-time",
        "probes/",
        "search.json",
        "bisects",
    ] {
        assert!(help.contains(words), "{words}: {help}");
    }
}

#[test]
fn sigint_mid_probe_keeps_the_probes_and_says_where_the_search_stopped() {
    // Every request takes about 1 s (10 chunks 100 ms apart); TTFT <= 500 ms passes at every
    // concurrency, so the search keeps probing until the signal.
    let server = TestServer::start(Script::paced(100, 100), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slow.toml");
    std::fs::write(
        &config,
        "[workloads.slow]\nprompt_tokens = 8\noutput_tokens = 10\nnum_requests = 8\nwarmup_requests = 0\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let child = bin()
        .args([
            "search",
            "--backend",
            "openai",
            "--base-url",
            &server.url(),
            "--no-metrics",
        ])
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--workload",
            "slow",
            "--num-requests",
            "8",
            "--concurrency",
            "1..8",
        ])
        .args(["--goodput", "ttft:500", "--grace-period", "0", "-q"])
        .args(["-o", out_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the second probe (concurrency 2) to record a request, then interrupt it.
    let records = out_dir.join("probes/slow_c2/slow_c2_requests.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&records).is_ok_and(|t| !t.is_empty()) {
        assert!(Instant::now() < deadline, "the second probe never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let answer = files::json(&out_dir.join("search.json"));
    let stopped = answer["stopped"].as_str().unwrap();
    assert!(
        stopped.starts_with("interrupted by SIGINT during the probe at c2"),
        "{stopped}"
    );
    assert_eq!(answer["largest_passing"], 1.0);
    assert_eq!(answer["probes"][1]["cut_short"], true);
    assert!(text(&out.stdout).contains("search stopped early"));
    // The cut probe's folder holds what it measured, marked incomplete.
    let summary = files::json(&out_dir.join("probes/slow_c2/benchmark_summary.json"));
    assert_eq!(summary["complete"], false);
}
