//! The client keeps its connections, as a user's measured TTFT depends on it: a new connection
//! costs at least one round trip (two or more with TLS) inside the TTFT of the request that
//! opens it. Each test runs the real binary against a server framed by hand on 127.0.0.1
//! (`sagellm_test_server::framed`) and counts the connections the server accepted.
//!
//! - uvicorn's framing (the chunked terminator in a write of its own after `[DONE]`): the
//!   client must read each body to its end, or the connection cannot go back to the pool.
//! - llama.cpp's server (closes every connection after its answer while advertising
//!   keep-alive), and a server closing a kept connection as the next request arrives: a request
//!   whose reused connection closed before any byte of its answer is sent once more, counted.

use std::time::Duration;

#[path = "common/run_cli.rs"]
mod run_cli;

use sagellm_test_server::framed::{AfterAnswer, FramedServer, Framing, Terminator};

const CONCURRENCY: usize = 4;
const REQUESTS: usize = 200;

/// Runs one closed-loop workload of `requests` 8-token requests at `concurrency` against
/// `server`, with one warm-up request, and returns its metrics and records. Without the probe
/// of `/tokenize`, whose client of its own would add one connection to the server's count:
/// what is counted is the connections under the generation requests.
fn run(
    server: &FramedServer,
    requests: usize,
    concurrency: usize,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let run = run_cli::run(
        "conn",
        &format!(
            "prompt_tokens = 16\noutput_tokens = 8\nnum_requests = {requests}\n\
             concurrency = {concurrency}\nwarmup_requests = 1"
        ),
        &[
            "--backend",
            "openai",
            "--no-metrics",
            "--no-tokenize",
            "--quiet",
            "--base-url",
            &server.url(),
            "--model",
            "framed-model",
        ],
        &[],
    );
    assert!(
        run.output.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    (run.metrics("conn"), run.records("conn"))
}

fn count(metrics: &serde_json::Value, field: &str) -> u64 {
    metrics[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {metrics}"))
}

/// The terminator in a write of its own, 5 ms after `[DONE]`, as uvicorn may send it, and each
/// new connection's first answer 20 ms late: the server sees at most concurrency + 2
/// connections (warm-up and pre-opened ones included) for 200 requests, and the mean TTFT
/// stays within 1 ms of the server's own plus the loopback and scheduling noise of a shared
/// 2-core machine. Before the client read bodies to their end, every request opened a
/// connection here (201 for 201) and paid the 20 ms.
#[test]
fn terminator_in_its_own_write_keeps_connections() {
    let server = FramedServer::start(Framing {
        terminator: Terminator::OwnWrite(Duration::from_millis(5)),
        first_answer_delay: Duration::from_millis(20),
        ..Framing::default()
    })
    .unwrap();
    let (metrics, records) = run(&server, REQUESTS, CONCURRENCY);
    assert_eq!(count(&metrics, "successful_requests"), REQUESTS as u64);
    eprintln!(
        "terminator 5 ms after [DONE]: the server accepted {} connections; {metrics}",
        server.connections()
    );
    assert!(
        server.connections() <= CONCURRENCY + 2,
        "the server accepted {} connections for {} requests at concurrency {CONCURRENCY}",
        server.connections(),
        REQUESTS + 1
    );
    assert_eq!(count(&metrics, "retried_requests"), 0);
    assert!(count(&metrics, "connections_opened") <= 2, "{metrics}");
    // A request on a new connection waits 5 + 20 ms for its first token; on a kept one, 5 ms
    // plus noise. At most the connections opened during the measured requests may wait.
    let waited = records
        .iter()
        .filter(|r| r["ttft_ms"].as_f64().unwrap() >= 25.0)
        .count() as u64;
    assert!(
        waited <= count(&metrics, "connections_opened"),
        "{waited} requests waited for a new connection"
    );
    let server_ttft = server.mean_server_ttft().unwrap().as_secs_f64() * 1e3;
    let mean = metrics["avg_ttft_ms"].as_f64().unwrap();
    assert!(
        mean - server_ttft < 1.5,
        "mean TTFT {mean:.2} ms against the server's {server_ttft:.2} ms"
    );
}

/// The terminator in the same write as `[DONE]`: the connections are kept as well.
#[test]
fn terminator_with_done_keeps_connections() {
    let server = FramedServer::start(Framing::default()).unwrap();
    let (metrics, _) = run(&server, REQUESTS, CONCURRENCY);
    assert_eq!(count(&metrics, "successful_requests"), REQUESTS as u64);
    assert!(
        server.connections() <= CONCURRENCY + 2,
        "{}",
        server.connections()
    );
}

/// A server that drops each kept connection when the next request arrives on it, before any
/// byte of the answer (an idle timeout firing as the client reuses the connection): every
/// request still succeeds, because each dropped one is sent once more on a fresh connection,
/// and exactly those are counted as retried.
#[test]
fn closed_kept_connection_is_retried_once_and_counted() {
    let server = FramedServer::start(Framing {
        after_answer: AfterAnswer::CloseOnNextRequest,
        ..Framing::default()
    })
    .unwrap();
    let requests = 40;
    let (metrics, records) = run(&server, requests, 1);
    assert_eq!(count(&metrics, "successful_requests"), requests as u64);
    assert!(records.iter().all(|r| r["success"] == true));
    let retried = count(&metrics, "retried_requests");
    // The warm-up request goes out on a new connection and is never dropped.
    assert_eq!(retried as usize, server.dropped_generations());
    assert!(retried > 0, "no request went out on a kept connection");
    // The warm-up and every measured request were answered once each.
    assert_eq!(server.generations(), requests + 1);
}

/// llama.cpp's server: it says `keep-alive` and closes every connection after its answer. No
/// request may fail (the race between its FIN and the next request is absorbed by the retry),
/// and the run says that it opened a connection per request.
#[test]
fn server_closing_every_connection_loses_no_request() {
    let server = FramedServer::start(Framing {
        after_answer: AfterAnswer::Close,
        ..Framing::default()
    })
    .unwrap();
    for concurrency in [1, CONCURRENCY] {
        let (metrics, _) = run(&server, REQUESTS, concurrency);
        assert_eq!(
            count(&metrics, "successful_requests"),
            REQUESTS as u64,
            "{metrics}"
        );
        assert!(count(&metrics, "connections_opened") >= REQUESTS as u64 / 2);
    }
}
