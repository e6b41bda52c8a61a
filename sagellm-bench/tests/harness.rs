//! The `cargo bench` harness, driven in-process with explicit arguments, on workloads declared
//! here with `#[workload]`.

use std::path::Path;

use sagellm_bench::__private::run_harness;
use sagellm_bench::workload::trace::{TracePrompt, TraceRequest};
use sagellm_bench::{workload, Prompts, Sessions, Setup, Trace};

#[workload(prompt_tokens = 64, output_tokens = 16, requests = 4)]
fn h_short() {}

#[workload(prompt_tokens = 32, output_tokens = 8, requests = 6, concurrency = [1, 3])]
fn h_sweep() {}

#[workload(output_tokens = 8, requests = 3, warmup = 0)]
async fn h_prompts(setup: &mut Setup) {
    setup.prompts(Prompts::from_texts(["alpha beta gamma", "delta epsilon"]));
    setup.check(|r| {
        // The mock streams words; a check sees the prompt it was given and the whole text.
        if r.text.split_whitespace().count() == 8 && r.prompt.starts_with(['a', 'd']) {
            Ok(())
        } else {
            Err(format!(
                "unexpected response {:?} to {:?}",
                r.text, r.prompt
            ))
        }
    });
}

#[workload(output_tokens = 4, requests = 2)]
fn h_failing_check(setup: &mut Setup) {
    setup.check(|_| Err("this check always fails".into()));
}

#[workload(output_tokens = 4, requests = 2, ignore)]
fn h_ignored() {}

// Multi-turn from the function body: 2 sessions of 3 turns of 20-word messages.
#[workload(prompt_tokens = 20, output_tokens = 8, concurrency = 2)]
fn h_chat(setup: &mut Setup) {
    setup.sessions(Sessions::synthetic(2, 3, 0));
}

// A trace given in code: three requests 100 ms apart.
#[workload]
fn h_trace(setup: &mut Setup) -> Result<(), String> {
    let request = |ms: u64, tokens: usize| TraceRequest {
        at: std::time::Duration::from_millis(ms),
        prompt: TracePrompt::Blocks {
            tokens,
            hash_ids: Vec::new(),
        },
        output_tokens: 4,
        session_id: None,
    };
    let trace = Trace::from_requests(
        vec![request(0, 10), request(100, 20), request(200, 30)],
        "code",
    )?;
    setup.trace(trace);
    Ok(())
}

fn harness(args: &[&str]) -> u8 {
    let mut all = vec!["bench-binary"];
    all.extend_from_slice(args);
    run_harness(all)
}

fn bench(out: &Path, args: &[&str]) -> u8 {
    let mut all = vec!["--bench", "-q", "--output", out.to_str().unwrap()];
    all.extend_from_slice(args);
    harness(&all)
}

fn exists(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

#[test]
fn a_filter_runs_only_the_matching_workloads() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["h_short"]), 0);
    assert!(exists(dir.path(), "h_short_metrics.json"));
    assert!(exists(dir.path(), "benchmark_summary.json"));
    assert!(exists(dir.path(), "h_short/new/metrics.json"));
    assert!(!exists(dir.path(), "h_sweep_c1_metrics.json"));
}

#[test]
fn exact_and_skip_narrow_the_selection() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["--exact", "h_sweep_c3"]), 0);
    assert!(exists(dir.path(), "h_sweep_c3_metrics.json"));
    assert!(!exists(dir.path(), "h_sweep_c1_metrics.json"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["h_s", "--skip", "sweep"]), 0);
    assert!(exists(dir.path(), "h_short_metrics.json"));
    assert!(!exists(dir.path(), "h_sweep_c3_metrics.json"));
}

#[test]
fn a_concurrency_sweep_expands_into_one_workload_per_value() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["h_sweep"]), 0);
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let c1 = read("h_sweep_c1_metrics.json");
    let c3 = read("h_sweep_c3_metrics.json");
    assert_eq!(c1["total_requests"], 6);
    // Three in flight share decode steps: a step takes longer than with one.
    assert!(c3["avg_tbt_ms"].as_f64() > c1["avg_tbt_ms"].as_f64());
}

#[test]
fn prompts_and_checks_from_the_function_body_are_used() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["--exact", "h_prompts"]), 0);
    let records = std::fs::read_to_string(dir.path().join("h_prompts_requests.jsonl")).unwrap();
    let prompt_tokens: Vec<u64> = records
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt_tokens"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Request i uses prompt i % 2: three words, two words, three words.
    assert_eq!(prompt_tokens, vec![3, 2, 3]);
    assert!(records.lines().all(|l| l.contains("\"success\":true")));
}

#[test]
fn a_failing_check_fails_the_request_and_the_smoke_test() {
    let dir = tempfile::tempdir().unwrap();
    // Every request failed its check: nothing was measured, so the run fails, after writing
    // every file.
    assert_eq!(
        bench(dir.path(), &["h_failing_check"]),
        1,
        "a benchmark that measured nothing fails"
    );
    let metrics = std::fs::read_to_string(dir.path().join("h_failing_check_metrics.json")).unwrap();
    assert!(metrics.contains("\"error_rate\": 1.0"), "{metrics}");
    let records =
        std::fs::read_to_string(dir.path().join("h_failing_check_requests.jsonl")).unwrap();
    assert!(records.contains("this check always fails") && records.contains("\"check\""));
    // As a test (no --bench), a failed request fails.
    assert_eq!(harness(&["h_failing_check"]), 101);
    assert_eq!(harness(&["h_", "--skip", "h_failing_check"]), 0);
}

#[test]
fn sessions_and_traces_from_the_function_body_run_as_benchmarks_and_as_tests() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["h_chat", "h_trace"]), 0);
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    let chat = read("h_chat_metrics.json");
    assert_eq!(chat["total_requests"], 6);
    // 20 words, then 20 + 8 + 20, then 48 + 8 + 20.
    let prompts: Vec<f64> = chat["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["avg_prompt_tokens"].as_f64().unwrap())
        .collect();
    assert_eq!(prompts, [20.0, 48.0, 76.0]);
    let trace = read("h_trace_metrics.json");
    assert_eq!(trace["total_requests"], 3);
    assert_eq!(trace["total_input_tokens"], 60);
    // As tests: one request each, a session's first turn and the trace's first request.
    assert_eq!(harness(&["h_chat", "h_trace"]), 0);
}

#[test]
fn ignored_workloads_run_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["h_ignored"]), 0);
    assert!(!exists(dir.path(), "h_ignored_metrics.json"));
    assert_eq!(bench(dir.path(), &["h_ignored", "--include-ignored"]), 0);
    assert!(exists(dir.path(), "h_ignored_metrics.json"));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bench(dir.path(), &["--ignored"]), 0);
    assert!(exists(dir.path(), "h_ignored_metrics.json"));
    assert!(!exists(dir.path(), "h_short_metrics.json"));
}

#[test]
fn baselines_save_compare_and_gate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    assert_eq!(bench(out, &["h_short", "--save-baseline", "a"]), 0);
    assert!(exists(out, "h_short/a/metrics.json") && exists(out, "h_short/a/requests.jsonl"));
    // The mock is deterministic: comparing with `a` finds nothing, even when gating.
    assert_eq!(
        bench(out, &["h_short", "--baseline", "a", "--fail-on-regression"]),
        0
    );
    // The two runs' distributions, overlaid.
    for metric in ["ttft", "tpot", "e2el"] {
        assert!(
            exists(out, &format!("h_short/{metric}_vs_a.svg")),
            "{metric}"
        );
    }

    // A slower engine regresses; only --fail-on-regression turns that into a failure.
    let slow = out.join("slow.toml");
    std::fs::write(&slow, "[mock]\nstep_base_us = 12000\n").unwrap();
    let slow = slow.to_str().unwrap();
    assert_eq!(
        bench(out, &["h_short", "--baseline", "a", "--config", slow]),
        0
    );
    assert_eq!(
        bench(
            out,
            &[
                "h_short",
                "--baseline",
                "a",
                "--config",
                slow,
                "--fail-on-regression"
            ]
        ),
        1
    );
    // --baseline compares without overwriting: `a` still holds the fast run.
    let a = std::fs::read_to_string(out.join("h_short/a/metrics.json")).unwrap();
    let new = std::fs::read_to_string(out.join("h_short/new/metrics.json")).unwrap();
    assert_ne!(a, new);

    // Compare two saved runs without running: save the slow one as `b`, then load.
    assert_eq!(
        bench(out, &["h_short", "--save-baseline", "b", "--config", slow]),
        0
    );
    assert_eq!(
        bench(
            out,
            &[
                "h_short",
                "--load-baseline",
                "b",
                "--baseline",
                "a",
                "--fail-on-regression"
            ]
        ),
        1
    );
    assert_eq!(
        bench(
            out,
            &[
                "h_short",
                "--load-baseline",
                "a",
                "--baseline",
                "b",
                "--fail-on-regression"
            ]
        ),
        0,
        "a faster run is an improvement, not a regression"
    );
}

#[test]
fn a_missing_baseline_is_an_error_before_running() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        bench(dir.path(), &["h_short", "--baseline", "never-saved"]),
        1
    );
    assert!(!exists(dir.path(), "h_short_metrics.json"));
}

#[test]
fn bad_arguments_exit_with_status_2() {
    assert_eq!(harness(&["--no-such-flag"]), 2);
    assert_eq!(
        harness(&["--load-baseline", "x"]),
        2,
        "--load-baseline needs --baseline"
    );
}

#[test]
fn smoke_mode_runs_every_workload_once() {
    assert_eq!(harness(&["h_", "--skip", "failing"]), 0);
    assert_eq!(harness(&["--list"]), 0);
}
