//! Server-side timings through a whole run: the test server exports vLLM's queue-time and TTFT
//! histograms (its scripted queue time, and the TTFT it measured itself); the run reads their
//! growth over the workload as `server_avg_queue_ms` and `server_avg_ttft_ms`, and what the
//! client adds on top as `ttft_outside_server_ms`.

#[path = "common/raw_server.rs"]
mod raw_server;
#[path = "common/run_cli.rs"]
mod run_cli;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    let url = server.url();
    let run = run_cli::run(
        "timed",
        "prompt_tokens = 16\noutput_tokens = 4\nnum_requests = 10\nconcurrency = 2\nwarmup_requests = 2",
        &["--backend", "vllm", "--quiet", "--base-url", &url],
        &[],
    );
    assert!(
        run.output.status.success(),
        "{}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    let m = run.metrics("timed");
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
        .arg(run.out().join("benchmark_summary.json"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("Server queue / TTFT avg (ms)"), "{table}");
    assert!(table.contains("4.00 / "), "{table}");
    assert!(table.contains("Connections opened / retried"), "{table}");
}

/// A server exporting `before` on its first `/metrics` scrape (the one before the measured
/// requests) and `after` on every later one, and streaming 4-token completions.
fn shaped_server(before: &'static str, after: &'static str) -> String {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let (url, _) = raw_server::serve(move |head, socket| {
        if head.starts_with("GET /metrics") {
            let text = match scrapes.fetch_add(1, Ordering::Relaxed) {
                0 => before,
                _ => after,
            };
            return raw_server::answer(socket, "200 OK", "text/plain; version=0.0.4", text);
        }
        if head.starts_with("GET") {
            return raw_server::answer(socket, "404 Not Found", "text/plain", "no");
        }
        raw_server::stream(socket, 4, "4");
    });
    url
}

/// Two requests with `--backend backend` against `url`; the workload's metrics.
fn metrics_of(backend: &str, url: &str) -> serde_json::Value {
    let run = run_cli::run(
        "w",
        "prompt_tokens = 8\noutput_tokens = 4\nnum_requests = 2\nwarmup_requests = 0",
        &[
            "--backend",
            backend,
            "--base-url",
            url,
            "--model",
            "m",
            "-q",
        ],
        &[],
    );
    assert!(run.output.status.success(), "{:?}", run.output);
    run.metrics("w")
}

/// The shapes of issue #20's table, served on loopback and read through whole runs: each
/// gives the true value.
#[test]
fn each_engines_shape_gives_the_true_figures() {
    // SGLang: the hits counter declared without series before the first hit, and two pipeline
    // ranks holding the same 1,000 tokens.
    let sglang = shaped_server(
        "# TYPE sglang:cached_tokens_total counter\n\
         sglang:prompt_tokens_total{model_name=\"m\"} 0\n\
         sglang:num_used_tokens{model_name=\"m\",pp_rank=\"0\"} 1000\n\
         sglang:num_used_tokens{model_name=\"m\",pp_rank=\"1\"} 1000\n",
        "# TYPE sglang:cached_tokens_total counter\n\
         sglang:cached_tokens_total{model_name=\"m\",cache_source=\"device\"} 500\n\
         sglang:prompt_tokens_total{model_name=\"m\"} 1000\n\
         sglang:num_used_tokens{model_name=\"m\",pp_rank=\"0\"} 1000\n\
         sglang:num_used_tokens{model_name=\"m\",pp_rank=\"1\"} 1000\n",
    );
    let m = metrics_of("sglang", &sglang);
    assert_eq!(m["prefix_hit_rate"], 0.5, "{m}");
    assert_eq!(m["kv_used_tokens"], 1000, "{m}");
    assert_eq!(m["sources"]["kv_cache"], "scraped");

    // LMDeploy 0.14 and later: cached and prompt token counters.
    let lmdeploy = shaped_server(
        "lmdeploy:cached_tokens_total{model_name=\"m\"} 10\nlmdeploy:prompt_tokens_total{model_name=\"m\"} 100\n",
        "lmdeploy:cached_tokens_total{model_name=\"m\"} 260\nlmdeploy:prompt_tokens_total{model_name=\"m\"} 1100\n",
    );
    assert_eq!(metrics_of("lmdeploy", &lmdeploy)["prefix_hit_rate"], 0.25);

    // vLLM with a hybrid model: capacity 8,000 tokens beside 1,000 blocks of 16.
    let hybrid = "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.5\n\
         vllm:cache_config_info{block_size=\"16\",engine=\"0\",kv_cache_size_tokens=\"8000\",num_gpu_blocks=\"1000\"} 1.0\n";
    assert_eq!(
        metrics_of("vllm", &shaped_server(hybrid, hybrid))["kv_used_tokens"],
        4000
    );
}
