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

/// The first trap of a new `cargo bench` user: a `[[bench]]` without `harness = false` runs
/// under libtest, which never calls `sagellm_bench::main()` and would print `running 0 tests`.
/// `#[workload]` makes that a build error that names the fix. A crate set up that way, in a
/// temporary folder, sharing the downstream example's target dir (so only it compiles).
#[test]
fn a_bench_target_without_harness_false_fails_to_build_and_names_the_fix() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let krate = tempfile::tempdir().unwrap();
    let manifest = format!(
        "[package]\nname = \"forgot-harness\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [workspace]\n\n[dev-dependencies]\n\
         sagellm-bench = {{ path = {:?}, default-features = false }}\n\n\
         [[bench]]\nname = \"inference\"\n",
        root.join("sagellm-bench")
    );
    std::fs::write(krate.path().join("Cargo.toml"), manifest).unwrap();
    // The example's lock pins the same dependencies, so `--offline` resolves.
    std::fs::copy(
        root.join("examples/downstream/Cargo.lock"),
        krate.path().join("Cargo.lock"),
    )
    .unwrap();
    std::fs::create_dir_all(krate.path().join("benches")).unwrap();
    std::fs::create_dir_all(krate.path().join("src")).unwrap();
    std::fs::write(krate.path().join("src/lib.rs"), "").unwrap();
    std::fs::write(
        krate.path().join("benches/inference.rs"),
        "#[sagellm_bench::workload(requests = 2)]\nfn short_input() {}\n\n\
         fn main() -> std::process::ExitCode {\n    sagellm_bench::main()\n}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(krate.path())
        .env("CARGO_TARGET_DIR", root.join("target").join("downstream"))
        .args(["bench", "--offline", "--bench", "inference", "--no-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it built:\n{stderr}");
    for expected in [
        "`#[workload] fn short_input` is in a bench target that libtest runs",
        "add `harness = false`",
        "name = \"inference\"",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}
