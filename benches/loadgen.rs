//! Load-generation benchmark: how fast the client itself goes, against the scripted test
//! server answering instantly (no TTFT, no gap between chunks). Not a timed test: it prints
//! figures for docs/PERFORMANCE.md.
//!
//! ```text
//! cargo bench --bench loadgen                         # 20,000 requests per level
//! LOADGEN_REQUESTS=5000 cargo bench --bench loadgen
//! ```
//!
//! Per concurrency level it reports requests/s and streamed tokens/s over the workload's wall
//! time, and the latency the client adds: measured TTFT minus the server's own TTFT (from
//! receiving the request to handing its first chunk to the socket). That difference holds
//! the client's request building, the loopback round trip, the server's HTTP parsing and the
//! client's SSE and JSON parsing, so it is an upper bound on what the client adds. Client and
//! server share the machine's cores; the server gets one runtime thread, the client the
//! runner's usual workers (one on a machine of two cores, two beyond).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagellm_bench::backend::openai::{OpenAiBackend, OpenAiConfig};
use sagellm_bench::report::{Report, ReportError};
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::WorkloadResult;
use sagellm_bench::{Arrival, Workload};
use sagellm_test_server::{Script, TestServer};

// Not every bench target uses every shared helper.
#[allow(dead_code)]
mod common;

#[derive(Default)]
struct Collect(Arc<Mutex<Vec<WorkloadResult>>>);

impl Report for Collect {
    fn workload_finished(&mut self, result: &WorkloadResult) -> Result<(), ReportError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(result.clone());
        Ok(())
    }
}

fn main() {
    if common::only_listing("loadgen") {
        return;
    }
    // `cargo bench` passes --bench; under `cargo test --benches` this is a quick smoke run.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let requests: usize = std::env::var("LOADGEN_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 20_000 } else { 200 });
    let output_tokens = 64;
    println!(
        "loadgen: {requests} requests per level, 32 prompt / {output_tokens} output tokens, one token per chunk, server answering instantly"
    );
    println!(
        "{:>11} {:>10} {:>12} {:>12} {:>12} {:>14} {:>14} {:>7}",
        "concurrency",
        "req/s",
        "tokens/s",
        "TTFT p50 ms",
        "TTFT mean ms",
        "server TTFT ms",
        "client adds ms",
        "failed"
    );
    for concurrency in [1usize, 16, 64] {
        let script = Script {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            ..Script::default()
        };
        let server = match TestServer::start(script, 1) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot start the test server: {e}");
                std::process::exit(1);
            }
        };
        let config = OpenAiConfig {
            base_url: Some(server.url()),
            model: Some("test-model".into()),
            no_metrics: true,
            ..OpenAiConfig::default()
        };
        let backend = match OpenAiBackend::connect("openai", config) {
            Ok(b) => Arc::new(b),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        // Warm-up runs one request; the measured part opens the other connections.
        let workload = Workload {
            arrival: Arrival::Closed { concurrency },
            seed: 1,
            ..Workload::new(
                &format!("loadgen_c{concurrency}"),
                32,
                output_tokens,
                requests,
            )
        };
        let collect = Collect::default();
        let results = collect.0.clone();
        let mut reporter = collect;
        let provenance = Provenance::now("openai", "test-model", serde_json::Value::Null);
        if let Err(e) = sagellm_bench::run(backend, &[workload], provenance, &mut reporter) {
            eprintln!("run failed: {e}");
            std::process::exit(1);
        }
        let results = results.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = results.first().map(|r| &r.metrics) else {
            eprintln!("no result");
            std::process::exit(1);
        };
        let server_ttft = server
            .mean_server_ttft()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        println!(
            "{:>11} {:>10.0} {:>12.0} {:>12.3} {:>12.3} {:>14.3} {:>14.3} {:>7}",
            concurrency,
            m.request_throughput_rps,
            m.output_throughput_tps,
            m.p50_ttft_ms,
            m.avg_ttft_ms,
            server_ttft,
            m.avg_ttft_ms - server_ttft,
            m.failed_requests
        );
    }
}
