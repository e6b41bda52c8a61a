//! The steady window of a closed-loop mock run, checked against bounds worked out by hand
//! from the mock's step model (docs/MOCK.md: step 8 ms + 0.4 ms per decoding sequence +
//! 0.04 ms per prefilled token).

use std::sync::Arc;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::{Arrival, Workload};

mod support;
use support::Collect;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6 * (1.0 + b.abs())
}

#[test]
fn the_window_of_a_closed_loop_at_64_starts_after_the_ramp_and_ends_before_the_drain() {
    // A budget that prefills all 64 prompts in one step, and no prefix reuse (the synthetic
    // prompts share words), so every figure follows from the step formula.
    let config = MockConfig {
        max_batched_tokens: 64 * 128,
        prefix_caching: false,
        ..MockConfig::default()
    };
    let mut workload = Workload::new("steady64", 128, 16, 100);
    workload.arrival = Arrival::Closed { concurrency: 64 };
    workload.warmup_requests = 0;
    let backend = Arc::new(MockBackend::new(config, None).unwrap());
    let mut collect = Collect::default();
    let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
    sagellm_bench::run(backend, &[workload], provenance, &mut collect).unwrap();
    let run = collect.measured().remove(0);
    let m = &run.metrics;

    // By hand. Round 1: the 64 workers send at 0 (the ramp: in flight 0 -> 64 at once). Step
    // 1 prefills 64 x 128 = 8192 tokens: 8 + 8192 x 0.04 = 335.68 ms, every first token. Then
    // 15 decode steps of 8 + 64 x 0.4 = 33.6 ms: all 64 end at 335.68 + 504 = 839.68 ms.
    // There the 64 workers find only 36 requests left: in flight 36 < ceil(0.95 x 64) = 61,
    // the drain. Round 2: prefill 36 x 128 tokens, 8 + 4608 x 0.04 = 192.32 ms, then 15
    // steps of 8 + 36 x 0.4 = 22.4 ms: the run ends at 839.68 + 192.32 + 336 = 1368 ms.
    let (round1_end, wall_ms) = (839.68, 1368.0);
    assert!(
        close(m.total_time_s * 1000.0, wall_ms),
        "{}",
        m.total_time_s
    );
    let (start, end) = (m.steady_start_ms.unwrap(), m.steady_end_ms.unwrap());
    assert!(close(start, 0.0), "{start}");
    assert!(close(end, round1_end), "{end}");
    // After the ramp: the 64th request in flight was sent at the window's start; before the
    // drain: the last send (the drain's first moment) is at the window's end, not before it.
    let mut sends: Vec<f64> = run.records.iter().map(|r| r.start_ms).collect();
    sends.sort_by(f64::total_cmp);
    assert!(close(sends[63], start));
    assert!(close(*sends.last().unwrap(), end));

    // The window holds round 1: 64 requests, 64 x 16 tokens over 0.83968 s, TTFT 335.68 ms
    // each; the whole run's TTFT mixes in round 2's 192.32 ms.
    assert_eq!(m.steady_requests, Some(64));
    assert!(close(
        m.steady_output_throughput_tps.unwrap(),
        64.0 * 16.0 / 0.83968
    ));
    assert!(close(
        m.steady_request_throughput_rps.unwrap(),
        64.0 / 0.83968
    ));
    assert!(close(m.steady_avg_ttft_ms.unwrap(), 335.68));
    assert!(close(m.steady_p99_ttft_ms.unwrap(), 335.68));
    assert!(close(m.steady_p99_e2el_ms.unwrap(), 839.68));
    assert!(close(
        m.avg_ttft_ms,
        (64.0 * 335.68 + 36.0 * 192.32) / 100.0
    ));
    // 64 requests over 839.68 of 1368 ms (more than half): long enough to trust.
    assert_eq!(m.steady_too_short, Some(false));

    // Delivered load: the 64 workers are all in flight at 0 (no ramp) and each sends its
    // next request at the instant the last one ends, on the virtual clock; the sending phase
    // ends at the last send, 839.68 ms, with 64 in flight all along.
    assert_eq!(m.concurrency_ramp_ms, Some(0.0));
    assert_eq!(m.below_target_ms, Some(0.0));
    assert_eq!(m.below_target_dips, Some(0));
    assert!(close(m.delivered_concurrency.unwrap(), 64.0));
}

#[test]
fn a_sequential_run_is_steady_throughout_but_too_short_with_few_requests() {
    // Concurrency 1: the level is 1, reached at the first send and left only after the last
    // request; the mock's 5 short_input requests take 1079.92 ms each back to back.
    let backend = Arc::new(MockBackend::new(MockConfig::default(), None).unwrap());
    let mut collect = Collect::default();
    let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
    sagellm_bench::run(
        backend,
        &[Workload::short_input()],
        provenance,
        &mut collect,
    )
    .unwrap();
    let m = collect.measured().remove(0).metrics;
    assert!(close(m.steady_start_ms.unwrap(), 0.0));
    assert!(close(m.steady_end_ms.unwrap(), 5.0 * 1079.92));
    assert_eq!(m.steady_requests, Some(5));
    assert_eq!(
        m.steady_too_short,
        Some(true),
        "5 requests are fewer than 10"
    );
}
