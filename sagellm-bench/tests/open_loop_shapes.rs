//! The open-loop shapes vLLM users bring (`--max-concurrency` over a rate, `--burstiness`,
//! ramp-up), through the real runner: against the test server on 127.0.0.1, which counts the
//! requests it has running at once, and against the mock, whose virtual clock starts every
//! request exactly on its schedule.

use std::sync::Arc;
use std::time::Duration;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::backend::openai::{OpenAiBackend, OpenAiConfig};
use sagellm_bench::backend::Backend;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::workload::RampStrategy;
use sagellm_bench::{Arrival, Workload};
use sagellm_test_server::{Script, TestServer};

mod support;
use support::{Collect, Measured};

fn run(backend: Arc<dyn Backend>, workload: Workload) -> Measured {
    let mut collect = Collect::default();
    let provenance = Provenance::now("test", "test-model", serde_json::Value::Null);
    sagellm_bench::run(backend, &[workload], provenance, &mut collect).expect("run");
    collect.measured().remove(0)
}

fn openai(server: &TestServer) -> Arc<dyn Backend> {
    let config = OpenAiConfig {
        base_url: Some(server.url()),
        stall_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        no_metrics: true,
        ..OpenAiConfig::default()
    };
    Arc::new(OpenAiBackend::connect("openai", config).expect("backend"))
}

fn mock() -> Arc<dyn Backend> {
    Arc::new(MockBackend::new(MockConfig::default(), None).unwrap())
}

/// 24 requests due every 10 ms, each taking about 50 + 7 * 10 = 120 ms on the server.
fn steady_stream(cap: Option<usize>) -> Workload {
    Workload {
        warmup_requests: 0,
        arrival: Arrival::Constant { rate: 100.0 },
        max_concurrency: cap,
        ..Workload::new("capped", 8, 8, 24)
    }
}

#[test]
fn max_concurrency_caps_an_open_loop_at_the_server_and_times_requests_from_their_send() {
    // Uncapped, requests 10 ms apart that last 120 ms overlap about 12 at a time; capped at
    // 3, the server must never see a fourth, and see three (the schedule outruns the cap).
    let server = TestServer::start(Script::paced(50, 10), 2).unwrap();
    let free = run(openai(&server), steady_stream(None));
    let uncapped_peak = server.peak_running();
    drop(server);
    assert!(
        uncapped_peak >= 6,
        "uncapped, the server saw at most {uncapped_peak} at once"
    );
    assert_eq!(free.metrics.max_concurrency, None);
    assert_eq!(free.metrics.capped_requests, None);

    let server = TestServer::start(Script::paced(50, 10), 2).unwrap();
    let capped = run(openai(&server), steady_stream(Some(3)));
    assert_eq!(server.peak_running(), 3);
    assert_eq!(server.requests(), 24);
    let m = &capped.metrics;
    assert_eq!(m.successful_requests, 24);
    assert_eq!(m.max_concurrency, Some(3));
    assert_eq!(m.client_held_requests, Some(0));
    // Three at a time for 24 requests of at least 120 ms each is at least 8 rounds, 960 ms;
    // the schedule ends at 230 ms, so most requests find the cap full and wait.
    let waited = m.capped_requests.unwrap();
    assert!(waited >= 12, "only {waited} requests waited for the cap");
    // Each record: the scheduled time as the schedule says, a start no earlier, and a TTFT
    // from the send, near the server's 50 ms however long the request waited for a slot.
    let mut largest_lag: f64 = 0.0;
    for (i, r) in capped.records.iter().enumerate() {
        let scheduled = r.scheduled_ms.unwrap();
        assert!((scheduled - 10.0 * i as f64).abs() < 1e-9, "{r:?}");
        let lag = r.start_ms - scheduled;
        assert!(lag >= 0.0, "{r:?}");
        largest_lag = largest_lag.max(lag);
        let ttft = r.ttft_ms.unwrap();
        assert!((50.0..150.0).contains(&ttft), "request {i}: TTFT {ttft} ms");
    }
    // The last request is due at 230 ms and sent no earlier than 7 full rounds in (840 ms).
    assert!(
        largest_lag > 500.0,
        "largest scheduling lag {largest_lag} ms"
    );
    assert!(m.schedule_lag_p99_ms.unwrap() > 500.0);
}

/// The gaps between consecutive sends, seconds.
fn send_gaps(r: &Measured) -> Vec<f64> {
    r.records
        .windows(2)
        .map(|w| (w[1].start_ms - w[0].start_ms) / 1000.0)
        .collect()
}

fn mean_and_cv(gaps: &[f64]) -> (f64, f64) {
    let n = gaps.len() as f64;
    let mean = gaps.iter().sum::<f64>() / n;
    let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (mean, sd / mean)
}

#[test]
fn burstiness_sets_the_spread_of_the_sends_at_the_same_mean_rate() {
    // Gamma gaps of shape B have the coefficient of variation 1/sqrt(B): 2 for B = 0.25, 1
    // for Poisson, 0.5 for B = 4, at any rate. Over 3,000 gaps the sample CV's standard error
    // is under 6% of it even for B = 0.25 (excess kurtosis 6/B = 24), so +-25% is four
    // standard errors and still far from the neighbouring shapes' CVs. The mean gap's
    // standard error is CV/sqrt(n), under 4% at B = 0.25: +-15% is four of them.
    for (burstiness, cv) in [(0.25, 2.0), (1.0, 1.0), (4.0, 0.5)] {
        let w = Workload {
            warmup_requests: 0,
            arrival: Arrival::Gamma {
                rate: 50.0,
                burstiness,
            },
            seed: 5,
            ..Workload::new("bursty", 4, 2, 3001)
        };
        let r = run(mock(), w);
        let (mean, measured) = mean_and_cv(&send_gaps(&r));
        eprintln!("burstiness {burstiness}: mean gap {mean:.5} s, CV {measured:.3}");
        assert!(
            (mean * 50.0 - 1.0).abs() < 0.15,
            "B {burstiness}: mean gap {mean}"
        );
        assert!(
            (measured - cv).abs() / cv < 0.25,
            "B {burstiness}: CV {measured}, expected {cv}"
        );
    }
}

#[test]
fn a_ramp_sends_at_the_times_worked_out_by_hand() {
    // Linear 2 -> 10 req/s over 5 requests, evenly spaced: rates 2, 4, 6, 8, 10; the gap
    // before request i is 1 / r_i: sends at 0, 250, 416.667, 541.667, 641.667 ms.
    let w = Workload {
        warmup_requests: 0,
        arrival: Arrival::Ramp {
            strategy: RampStrategy::Linear,
            start_rate: 2.0,
            end_rate: 10.0,
            burstiness: None,
        },
        ..Workload::new("ramp", 4, 2, 5)
    };
    let r = run(mock(), w);
    let first = r.records[0].start_ms;
    let expected = [0.0, 250.0, 1250.0 / 3.0, 1625.0 / 3.0, 1925.0 / 3.0];
    for (rec, at) in r.records.iter().zip(expected) {
        // Virtual time: no lag, so each send is on its time to the clock's nanosecond.
        assert!(
            (rec.start_ms - first - at).abs() < 1e-3,
            "{rec:?}, expected {at}"
        );
        assert!((rec.scheduled_ms.unwrap() - at).abs() < 1e-3, "{rec:?}");
    }
    // Exponential 1 -> 16 req/s over 5 requests: rates 1, 2, 4, 8, 16: 0, 500, 750, 875,
    // 937.5 ms.
    let w = Workload {
        warmup_requests: 0,
        arrival: Arrival::Ramp {
            strategy: RampStrategy::Exponential,
            start_rate: 1.0,
            end_rate: 16.0,
            burstiness: None,
        },
        ..Workload::new("ramp", 4, 2, 5)
    };
    let r = run(mock(), w);
    let first = r.records[0].start_ms;
    for (rec, at) in r.records.iter().zip([0.0, 500.0, 750.0, 875.0, 937.5]) {
        assert!(
            (rec.start_ms - first - at).abs() < 1e-3,
            "{rec:?}, expected {at}"
        );
    }
}
