//! The openai backend against the scripted test server on 127.0.0.1: measured TTFT and TBT
//! agree with the script, every fault is a counted failure with its reason, and the server's
//! Prometheus figures arrive as deltas.
//!
//! Tolerances. The server sends chunk k at the absolute instant `received + ttft + k * itl`;
//! tokio's timer rounds each deadline up to the next millisecond and may fire a little late on
//! a busy 2-core machine. So a measured TTFT can never be below the script (less loopback
//! noise, 0.5 ms allowed), and lies above it by the timer's rounding (< 1 ms), the client's and
//! the server's own processing, and scheduling delay when 64 streams share 2 cores with other
//! builds. The median TTFT must be within +6 ms of the script at concurrency 1 and 16 and
//! +15 ms at 64; the mean, which also carries the first round's connection set-up (64 new
//! connections at once) and the debug build's slower parsing, within +6, +8 and +25 ms.
//! Measured here (debug build, 2 shared cores): +2.3, +3.5 and +6.5 ms mean. TBT is `(last - first) / (n - 1)`: the two endpoints carry the same kind of
//! error but it is spread over n - 1 = 31 gaps, so the mean TBT must be within ±1 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sagellm_bench::backend::openai::{Api, OpenAiBackend, OpenAiConfig};
use sagellm_bench::backend::{CountTokens, ErrorKind, FigureSource};
use sagellm_bench::report::files::JsonFiles;
use sagellm_bench::report::Reports;
use sagellm_bench::results::record::TokenCountSource;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::{Arrival, Workload};
use sagellm_test_server::{Fault, Script, TestServer, UsagePlacement};

mod support;
use support::{Collect, Measured};

fn workload(name: &str, requests: usize, concurrency: usize, output: usize) -> Workload {
    Workload {
        warmup_requests: 0,
        arrival: Arrival::Closed { concurrency },
        seed: 1,
        ..Workload::new(name, 32, output, requests)
    }
}

fn config(server: &TestServer) -> OpenAiConfig {
    OpenAiConfig {
        base_url: Some(server.url()),
        stall_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        ..OpenAiConfig::default()
    }
}

/// Runs `workloads` and returns their results; also writes the JSON files into `out`.
fn run(config: OpenAiConfig, workloads: &[Workload], out: &std::path::Path) -> Vec<Measured> {
    let backend = Arc::new(OpenAiBackend::connect("openai", config).expect("backend"));
    let collected = Collect::default();
    let results = collected.clone();
    let mut reports = Reports::new(vec![Box::new(JsonFiles::new(out)), Box::new(collected)]);
    let provenance = Provenance::now("openai", "test-model", serde_json::Value::Null);
    sagellm_bench::run(backend, workloads, provenance, &mut reports).expect("run");
    results.measured()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn measured_ttft_and_tbt_match_the_script_at_concurrency_1_16_and_64() {
    let ttft_ms = 30.0;
    let itl_ms = 8.0;
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(ttft_ms as u64),
            itl: Duration::from_millis(itl_ms as u64),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let workloads = [
        workload("c1", 8, 1, 32),
        workload("c16", 64, 16, 32),
        workload("c64", 128, 64, 32),
    ];
    let results = run(config(&server), &workloads, out.path());
    for (result, (p50_tolerance, mean_tolerance)) in
        results.iter().zip([(6.0, 6.0), (6.0, 8.0), (15.0, 25.0)])
    {
        let name = &result.workload.name;
        let m = &result.metrics;
        assert_eq!(
            m.failed_requests, 0,
            "{name}: {:?}",
            result.records[0].error
        );
        for r in result.records.iter() {
            let ttft = r.ttft_ms.unwrap();
            assert!(
                ttft >= ttft_ms - 0.5,
                "{name}: TTFT {ttft} below the script"
            );
            assert_eq!(r.output_tokens, 32);
            assert_eq!(r.output_tokens_source, TokenCountSource::Usage);
        }
        let ttft = mean(result.records.iter().filter_map(|r| r.ttft_ms));
        let tbt = mean(result.records.iter().filter_map(|r| r.tbt_ms));
        eprintln!(
            "{name}: TTFT mean {ttft:.3} ms, p50 {:.3} ms (script {ttft_ms}); mean TBT {tbt:.3} ms (script {itl_ms})",
            m.p50_ttft_ms
        );
        assert!(
            m.p50_ttft_ms - ttft_ms < p50_tolerance,
            "{name}: p50 TTFT {} vs {ttft_ms}",
            m.p50_ttft_ms
        );
        assert!(
            ttft - ttft_ms < mean_tolerance,
            "{name}: mean TTFT {ttft} vs {ttft_ms}"
        );
        assert!(
            (tbt - itl_ms).abs() < 1.0,
            "{name}: mean TBT {tbt} vs {itl_ms}"
        );
        assert!((m.avg_tbt_ms - tbt).abs() < 1e-9);
    }
    for file in [
        "c1_metrics.json",
        "c16_requests.jsonl",
        "c64_metrics.json",
        "benchmark_summary.json",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
}

#[test]
fn every_fault_is_a_counted_failure_and_the_run_goes_on() {
    let faults = HashMap::from([
        (1, Fault::Status(500)),
        (2, Fault::Status(429)),
        (3, Fault::DisconnectAfter(2)),
        (4, Fault::MalformedAfter(1)),
        (5, Fault::StallAfter(1)),
    ]);
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(2),
            itl: Duration::from_millis(1),
            faults,
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.stall_timeout = Duration::from_millis(500);
    // Sequential, so the server's request numbers are the workload's indices.
    let results = run(cfg, &[workload("faults", 8, 1, 8)], out.path());
    let result = &results[0];
    let m = &result.metrics;
    assert_eq!((m.total_requests, m.failed_requests), (8, 5));
    assert_eq!(m.error_rate, 5.0 / 8.0);
    let kind = |i: usize| result.records[i].error.as_ref().map(|e| e.kind);
    let message = |i: usize| result.records[i].error.as_ref().unwrap().message.clone();
    assert_eq!(kind(0), None);
    assert_eq!(kind(1), Some(ErrorKind::Http));
    assert!(message(1).contains("500"), "{}", message(1));
    assert_eq!(kind(2), Some(ErrorKind::Http));
    assert!(message(2).contains("429"), "{}", message(2));
    assert_eq!(kind(3), Some(ErrorKind::Connection));
    assert_eq!(
        result.records[3].stream_tokens, 2,
        "tokens before the break stay"
    );
    assert_eq!(kind(4), Some(ErrorKind::Protocol));
    assert!(message(4).contains("malformed JSON"), "{}", message(4));
    assert_eq!(kind(5), Some(ErrorKind::Timeout));
    assert!(message(5).contains("stall"), "{}", message(5));
    assert_eq!((kind(6), kind(7)), (None, None));
    assert!(out.path().join("faults_requests.jsonl").is_file());
    assert!(out.path().join("benchmark_summary.json").is_file());
}

#[test]
fn connection_refused_fails_each_request_and_files_are_written() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tempfile::tempdir().unwrap();
    let cfg = OpenAiConfig {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        model: Some("any".into()),
        ..OpenAiConfig::default()
    };
    let results = run(cfg, &[workload("refused", 3, 2, 4)], out.path());
    let m = &results[0].metrics;
    assert_eq!((m.failed_requests, m.error_rate), (3, 1.0));
    for r in results[0].records.iter() {
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.kind, ErrorKind::Connection);
        assert!(e.message.contains("cannot connect"), "{}", e.message);
    }
    assert_eq!(m.sources.kv_cache, FigureSource::Unavailable);
    assert!(out.path().join("refused_metrics.json").is_file());
}

#[test]
fn several_tokens_per_chunk_usage_in_the_last_chunk_and_a_chat_role_chunk() {
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(15),
            itl: Duration::from_millis(4),
            tokens_per_chunk: 4,
            usage: UsagePlacement::LastChunk,
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.api = Api::Chat;
    let results = run(cfg, &[workload("chat", 4, 1, 32)], out.path());
    for r in results[0].records.iter() {
        assert!(r.success, "{:?}", r.error);
        // The role-only chunk and the comment line come at once; TTFT waits for content.
        assert!(r.ttft_ms.unwrap() >= 14.5, "TTFT {:?}", r.ttft_ms);
        assert_eq!(r.token_times_ms.len(), 8, "8 chunks of 4 tokens");
        assert_eq!(r.stream_tokens, 8, "one per chunk without a tokenizer");
        assert_eq!((r.output_tokens, r.usage_tokens), (32, Some(32)));
        // 7 gaps of 4 ms spread over 31 token gaps.
        let tbt = r.tbt_ms.unwrap();
        assert!((tbt - 28.0 / 31.0).abs() < 0.3, "TBT {tbt}");
    }
}

/// A word-level tokenizer.json: one token per whitespace-separated word, as the test server's
/// text ("tok tok tok ...") holds one word per token.
fn word_tokenizer(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tokenizer.json");
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": { "[UNK]": 0, "tok": 1 }, "unk_token": "[UNK]" }
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[test]
fn without_usage_a_tokenizer_counts_the_streamed_text() {
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(2),
            tokens_per_chunk: 4,
            usage: UsagePlacement::Omitted,
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let counter = sagellm_bench::backend::openai::token_counter::TokenCounter::load(
        &word_tokenizer(out.path()),
    )
    .expect("the test tokenizer loads");
    assert_eq!(counter.count("tok tok tok "), Some(3));
    let w = workload("counted", 3, 1, 32);
    // Without a tokenizer (and without the server's /tokenize, which would count them: see
    // openai_reasoning.rs): 8 chunks of 4 tokens count as 8.
    let plain = run(
        OpenAiConfig {
            no_tokenize: true,
            ..config(&server)
        },
        std::slice::from_ref(&w),
        out.path(),
    );
    for r in plain[0].records.iter() {
        assert_eq!(r.output_tokens_source, TokenCountSource::Stream);
        assert_eq!((r.output_tokens, r.usage_tokens), (8, None));
    }
    assert_eq!(
        plain[0].metrics.sources.output_tokens,
        sagellm_bench::results::metrics::OutputTokenSource::Stream
    );
    // With it: the text of 32 words counts 32, and TBT spreads the 7 chunk gaps of 2 ms over
    // 31 token gaps.
    let mut cfg = config(&server);
    cfg.tokenizer = Some(Arc::new(counter));
    let counted = run(cfg, &[w], out.path());
    for r in counted[0].records.iter() {
        assert!(r.success, "{:?}", r.error);
        assert_eq!(r.output_tokens_source, TokenCountSource::Tokenizer);
        assert_eq!((r.output_tokens, r.stream_tokens), (32, 8));
        let tbt = r.tbt_ms.unwrap();
        assert!((tbt - 14.0 / 31.0).abs() < 0.3, "TBT {tbt}");
    }
    let m = &counted[0].metrics;
    assert_eq!(
        m.sources.output_tokens,
        sagellm_bench::results::metrics::OutputTokenSource::Tokenizer
    );
    assert_eq!(m.total_output_tokens, 3 * 32);
    // The per-request file says which count each request used.
    let line = std::fs::read_to_string(out.path().join("counted_requests.jsonl")).unwrap();
    assert!(
        line.contains("\"output_tokens_source\":\"tokenizer\""),
        "{line}"
    );
}

#[test]
fn a_different_token_count_from_the_server_is_what_counts() {
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(1),
            itl: Duration::from_millis(1),
            completion_tokens: Some(10),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let results = run(config(&server), &[workload("short", 2, 1, 16)], out.path());
    for r in results[0].records.iter() {
        assert_eq!((r.output_tokens, r.usage_tokens), (10, Some(10)));
    }
}

#[test]
fn server_figures_are_scraped_deltas_over_the_measured_requests() {
    let server = TestServer::start(
        Script {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(20),
            tokens_per_chunk: 2,
            prefix_hit_fraction: 0.25,
            spec_accept_fraction: 0.5,
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(&server);
    cfg.scrape_interval = Duration::from_millis(20);
    let mut w = workload("scraped", 8, 4, 16);
    w.warmup_requests = 2;
    let results = run(cfg, &[w], out.path());
    let m = &results[0].metrics;
    assert_eq!(m.failed_requests, 0);
    // 32 prompt tokens each, 8 of them hits: exactly a quarter, warm-up excluded or not.
    assert_eq!(m.prefix_hit_rate, 0.25);
    assert_eq!(m.spec_accept_rate, 0.5);
    // Four requests in flight hold up to 4 * (32 + 16) tokens; the sampler sees some of it.
    assert!(
        m.kv_used_tokens > 0 && m.kv_used_tokens <= 4 * 48,
        "{}",
        m.kv_used_tokens
    );
    assert!(m.peak_mem_mb > 0.0);
    assert_eq!(m.sources.kv_cache, FigureSource::Scraped);
    assert_eq!(m.sources.memory, FigureSource::Scraped);
    assert_eq!(m.sources.speculative, FigureSource::Scraped);
    assert_eq!(server.requests(), 10);
}

#[test]
fn model_name_comes_from_v1_models() {
    let server = TestServer::start(
        Script {
            model: "served-name".into(),
            ..Script::default()
        },
        1,
    )
    .unwrap();
    let backend = OpenAiBackend::connect("vllm", config(&server)).unwrap();
    use sagellm_bench::Backend;
    assert_eq!(backend.model(), "served-name");
    assert_eq!(backend.name(), "vllm");
}
