//! The design card's "used by" story: a crate outside this workspace depends on sagellm-bench
//! by path, declares its own workloads with `#[workload]` (prompts from its own file, its own
//! concurrency sweep, an open-loop workload) and runs them with `cargo bench`.
//!
//! The crate builds into `target/downstream`, so the first run compiles its dependencies
//! (about a minute on two cores: it turns sagellm-bench's heavy features off); later runs take
//! seconds.

#[path = "common/example_crate.rs"]
mod example_crate;
#[path = "common/files.rs"]
mod files;

use files::json;

fn cargo_bench(args: &[&str]) -> std::process::Output {
    example_crate::bench("downstream", args, &[])
}

#[test]
fn downstream_crate_runs_its_own_workloads_under_cargo_bench() {
    let listed = String::from_utf8(cargo_bench(&["--list", "--format", "terse"]).stdout).unwrap();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "support_chat_c1: bench",
            "support_chat_c4: bench",
            "support_chat_c8: bench",
            "system_prompt_reuse: bench",
            "open_loop_traffic: bench",
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    cargo_bench(&["--quiet", "--output", dir.path().to_str().unwrap()]);
    let summary = json(&dir.path().join("benchmark_summary.json"));
    assert_eq!(summary["overall"]["total_workloads"], 5);
    assert_eq!(
        summary["overall"]["failed_requests"], 0,
        "every answer passed the crate's check"
    );

    // Its own prompts: six questions from prompts.jsonl, each a dozen words or so.
    let chat = json(&dir.path().join("support_chat_c4_metrics.json"));
    assert_eq!(chat["total_requests"], 12);
    assert_eq!(chat["total_output_tokens"], 12 * 48);
    let first = std::fs::read_to_string(dir.path().join("support_chat_c1_requests.jsonl")).unwrap();
    let prompt_tokens = serde_json::from_str::<serde_json::Value>(first.lines().next().unwrap())
        .unwrap()["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(
        prompt_tokens, 10,
        "the first prompt of prompts.jsonl has ten words"
    );

    // Its sweep: more in flight, more requests per second.
    let c1 = json(&dir.path().join("support_chat_c1_metrics.json"));
    let c8 = json(&dir.path().join("support_chat_c8_metrics.json"));
    assert!(c8["request_throughput_rps"].as_f64() > c1["request_throughput_rps"].as_f64());

    let reuse = json(&dir.path().join("system_prompt_reuse_metrics.json"));
    assert!(reuse["prefix_hit_rate"].as_f64().unwrap() > 0.5, "{reuse}");

    let open =
        std::fs::read_to_string(dir.path().join("open_loop_traffic_requests.jsonl")).unwrap();
    assert!(open.lines().all(|l| !l.contains("\"scheduled_ms\":null")));
    // The crate turns sagellm-bench's default features off: JSON files, no charts.
    assert!(!dir.path().join("index.html").exists());
}
