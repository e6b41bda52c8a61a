//! A run owns its output folder (issue #13, classes 4 and 5): a second run into the same folder
//! refuses, a rerun moves the earlier run aside instead of mixing with it, a run killed during
//! its first workload still leaves a summary `report` reads, and symlinks planted at the names
//! a run writes are never followed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sagellm_test_server::{Script, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sagellm-benchmark");

/// Each request streams 10 chunks 100 ms apart: about a second.
fn slow_server() -> TestServer {
    let script = Script::paced(100, 100);
    TestServer::start(script, 1).unwrap()
}

/// `slow`: 8 requests of 10 tokens, 2 in flight, about 4 s. `after`: 2 requests.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("workloads.toml");
    std::fs::write(
        &path,
        "[workloads.slow]\nprompt_tokens = 8\noutput_tokens = 10\nnum_requests = 8\nconcurrency = 2\nwarmup_requests = 0\n\n\
         [workloads.after]\nprompt_tokens = 8\noutput_tokens = 2\nnum_requests = 2\nwarmup_requests = 0\n",
    )
    .unwrap();
    path
}

fn start(server: &TestServer, dir: &Path, out: &Path, workloads: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--backend", "openai", "--base-url", &server.url()])
        .args(["--no-metrics", "-q", "--workload", workloads, "--config"])
        .arg(config(dir))
        .arg("-o")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn mock_run(out: &Path, workload: &str) -> Output {
    Command::new(BIN)
        .args([
            "run",
            "--backend",
            "mock",
            "-q",
            "--workload",
            workload,
            "-o",
        ])
        .arg(out)
        .output()
        .unwrap()
}

fn report(summary: &Path) -> Output {
    Command::new(BIN)
        .args(["report", "-i"])
        .arg(summary)
        .output()
        .unwrap()
}

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

#[path = "common/files.rs"]
mod files;

use files::json;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn previous_folders(out: &Path) -> Vec<PathBuf> {
    names(out)
        .into_iter()
        .filter(|n| n.starts_with("previous-"))
        .map(|n| out.join(n))
        .collect()
}

#[test]
fn a_second_run_into_the_same_folder_refuses_and_the_first_is_unharmed() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = start(&server, dir.path(), &out, "slow");
    wait_for_lines(&out.join("slow_requests.jsonl"), 1);

    let second = mock_run(&out, "short");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another sagellm-benchmark run (process {}) is writing into",
            first.id()
        )) && stderr.contains("--output"),
        "{stderr}"
    );

    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The first run's files are its own, whole: no record of the refused run in them.
    let records = std::fs::read_to_string(out.join("slow_requests.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 8);
    for line in records.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["success"], true);
    }
    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], true);
    assert_eq!(
        summary["workloads"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["slow"]
    );
    assert!(!out.join("short_input_requests.jsonl").exists());
    assert!(previous_folders(&out).is_empty());
}

#[test]
fn a_rerun_with_other_workloads_moves_the_earlier_run_aside() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    assert!(mock_run(&out, "short").status.success());
    let second = mock_run(&out, "long");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("were moved to"), "{stderr}");

    // The folder holds the new run only (and the user's own file).
    let now = names(&out);
    assert!(now.iter().all(|n| !n.starts_with("short_input")), "{now:?}");
    assert!(now.contains(&"long_input_requests.jsonl".to_string()));
    assert!(now.contains(&"notes.txt".to_string()));
    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(
        summary["workloads"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["long_input"]
    );
    // The earlier run is whole in its own folder, and `report` reads it there.
    let previous = previous_folders(&out);
    assert_eq!(previous.len(), 1, "{now:?}");
    let old = json(&previous[0].join("benchmark_summary.json"));
    assert_eq!(
        old["workloads"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["short_input"]
    );
    assert!(previous[0].join("short_input_requests.jsonl").exists());
    assert!(report(&previous[0].join("benchmark_summary.json"))
        .status
        .success());
    assert!(report(&out.join("benchmark_summary.json")).status.success());
}

#[test]
fn a_run_killed_during_its_first_workload_leaves_a_summary_report_reads() {
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A complete run was there before: its summary must not pass for the new run's.
    assert!(mock_run(&out, "short").status.success());
    let mut child = start(&server, dir.path(), &out, "slow,after");
    wait_for_lines(&out.join("slow_requests.jsonl"), 3);
    child.kill().unwrap();
    child.wait().unwrap();

    let summary_path = out.join("benchmark_summary.json");
    let on_disk = json(&summary_path);
    assert_eq!(on_disk["complete"], false, "{on_disk}");
    assert!(on_disk["workloads"].get("short_input").is_none());

    let output = report(&summary_path);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("INCOMPLETE RUN"), "{stdout}");
    assert!(stdout.contains("slow"), "{stdout}");
    assert!(
        stderr.contains("stopped during workload slow") && stderr.contains("rebuilt from"),
        "{stderr}"
    );
    // The JSON view carries the rebuilt workload, with as many requests as were recorded.
    let json_out = Command::new(BIN)
        .args(["report", "--format", "json", "-i"])
        .arg(&summary_path)
        .output()
        .unwrap();
    let rebuilt: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let recorded = std::fs::read_to_string(out.join("slow_requests.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    assert_eq!(rebuilt["workloads"]["slow"]["total_requests"], recorded);
    assert_eq!(rebuilt["workloads"]["slow"]["complete"], false);
    assert_eq!(rebuilt["overall"]["total_requests"], recorded);
}

/// The pids the next few processes are likely to get, to plant links at the temporary names the
/// writer used to derive from its pid.
#[cfg(target_os = "linux")]
fn next_pids() -> std::ops::Range<u32> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);
    last + 1..last + 40
}

#[cfg(not(target_os = "linux"))]
fn next_pids() -> std::ops::Range<u32> {
    0..0
}

#[cfg(unix)]
#[test]
fn symlinks_planted_at_the_names_a_run_writes_are_never_followed() {
    use std::os::unix::fs::symlink;
    let server = slow_server();
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Before the run: at the final names, and at the old guessable temporary names.
    let mut planted = vec![
        "benchmark_summary.json".to_string(),
        "slow_requests.jsonl".to_string(),
        "slow_metrics.json".to_string(),
        "index.html".to_string(),
        "slow_ttft_cdf.svg".to_string(),
        "run_key_metrics.svg".to_string(),
    ];
    for pid in next_pids() {
        planted.push(format!(".benchmark_summary.json.tmp-{pid}"));
        planted.push(format!(".slow_metrics.json.tmp-{pid}"));
        planted.push(format!(".index.html.tmp-{pid}"));
    }
    for name in &planted {
        symlink(&victim, out.join(name)).unwrap();
    }
    let child = start(&server, dir.path(), &out, "slow,after");
    // During the run, once the folder is claimed: at the names the next workload and the end
    // of the run write.
    wait_for_lines(&out.join("slow_requests.jsonl"), 1);
    let during = [
        "after_requests.jsonl",
        "after_metrics.json",
        "after_ttft_cdf.svg",
        "index.html",
    ];
    for name in during {
        let _ = std::fs::remove_file(out.join(name));
        symlink(&victim, out.join(name)).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // Every final name is the run's own regular file now, with the run's content.
    for name in [
        "benchmark_summary.json",
        "slow_requests.jsonl",
        "slow_metrics.json",
        "after_requests.jsonl",
        "after_metrics.json",
        "index.html",
    ] {
        let meta = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name} is not a regular file");
    }
    let summary = json(&out.join("benchmark_summary.json"));
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["overall"]["total_requests"], 10);
}
