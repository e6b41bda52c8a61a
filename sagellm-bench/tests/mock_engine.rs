//! The mock engine, driven through the real runner, against figures computed by hand from its
//! documented parameters (defaults: step 8 ms + 0.4 ms per decoding sequence + 0.04 ms per
//! prefilled token; 2048-token step budget; 16-token blocks).

use std::sync::Arc;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::backend::ErrorKind;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::{Arrival, Workload};

mod support;
use support::{Collect, Measured};

fn run_with(config: MockConfig, workloads: &[Workload]) -> Vec<Measured> {
    let backend = Arc::new(MockBackend::new(config, None).unwrap());
    let mut collect = Collect::default();
    let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
    sagellm_bench::run(backend, workloads, provenance, &mut collect).unwrap();
    collect.measured()
}

fn run_one(config: MockConfig, workload: Workload) -> Measured {
    run_with(config, &[workload]).remove(0)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn sequential_latencies_follow_the_step_model() {
    let r = run_one(MockConfig::default(), Workload::short_input());
    let m = &r.metrics;
    // Prefill of 128 tokens in one step: 8 + 128 * 0.04 = 13.12 ms.
    assert!(close(m.p50_ttft_ms, 13.12), "{}", m.p50_ttft_ms);
    // One decoding sequence per step: 8 + 0.4 = 8.4 ms between tokens.
    assert!(close(m.avg_tbt_ms, 8.4));
    assert!(close(m.p99_itl_ms, 8.4));
    // E2E: 13.12 + 127 * 8.4 = 1079.92 ms; TPOT = 1079.92 / 128.
    assert!(close(m.avg_e2el_ms, 1079.92));
    assert!(close(m.avg_tpot_ms, 1079.92 / 128.0));
    // Sequential: wall time is five back-to-back requests.
    assert!(close(m.total_time_s, 5.0 * 1.07992));
    assert_eq!(m.total_output_tokens, 5 * 128);
}

#[test]
fn concurrent_requests_queue_and_decode_slower_in_a_bigger_batch() {
    let r = run_one(MockConfig::default(), Workload::stress_test());
    let m = &r.metrics;
    // Step 1 prefills 8 prompts (the 2048-token budget): 8 + 2048 * 0.04 = 89.92 ms.
    // Step 2 decodes those 8 and prefills the other 2: 8 + 8 * 0.4 + 512 * 0.04 = 31.68 ms,
    // so the last two wait until 121.6 ms.
    let mut ttfts: Vec<f64> = r.records.iter().map(|r| r.ttft_ms.unwrap()).collect();
    ttfts.sort_by(f64::total_cmp);
    assert!(ttfts[..8].iter().all(|&t| close(t, 89.92)));
    assert!(ttfts[8..].iter().all(|&t| close(t, 121.6)));
    assert!(m.p99_ttft_ms > m.p50_ttft_ms);
    // Once all ten decode together a step takes 8 + 10 * 0.4 = 12 ms. ITL percentiles are read
    // from an HDR histogram, within 1/2048 of the exact value (docs/METRICS.md).
    assert!(
        (m.p50_itl_ms - 12.0).abs() <= 12.0 / 2048.0,
        "{}",
        m.p50_itl_ms
    );
    // Peak KV, at the step where the first eight produce their last token: each holds
    // 256 + 255 computed tokens, the two that started a step later 256 + 254.
    assert_eq!(m.kv_used_tokens, 8 * 511 + 2 * 510);
    // Bytes count whole 16-token blocks: 32 blocks per sequence, of 16 * 22528 bytes.
    assert_eq!(m.kv_used_bytes, 10 * 32 * 16 * 22528);
    assert_eq!(m.evict_count, 0);
}

#[test]
fn a_small_kv_cache_evicts_and_preempts() {
    let config = MockConfig {
        kv_blocks: 200,
        ..MockConfig::default()
    };
    let r = run_one(config, Workload::stress_test());
    let m = &r.metrics;
    assert!(m.evict_count > 0);
    assert!(m.evict_ms > 0.0);
    // 200 blocks of 16 tokens: the cache is full at its peak.
    assert_eq!(m.kv_used_tokens, 200 * 16);
    assert_eq!(
        m.failed_requests, 0,
        "preempted requests are recomputed, not failed"
    );
    let roomy = run_one(MockConfig::default(), Workload::stress_test());
    assert!(m.avg_e2el_ms > roomy.metrics.avg_e2el_ms);
}

#[test]
fn a_request_that_can_never_fit_fails_and_the_run_goes_on() {
    let config = MockConfig {
        kv_blocks: 10, // 160 tokens; short_input needs 128 + 127
        ..MockConfig::default()
    };
    let r = run_one(config, Workload::short_input());
    assert_eq!(r.metrics.failed_requests, 5);
    assert_eq!(r.metrics.error_rate, 1.0);
    let error = r.records[0].error.as_ref().unwrap();
    assert_eq!(error.kind, ErrorKind::Engine);
    assert!(error.message.contains("kv_blocks"), "{}", error.message);
}

#[test]
fn shared_prefixes_hit_the_cache_and_cut_ttft() {
    let mut shared = Workload::stress_test();
    shared.name = "shared".into();
    shared.shared_prefix_tokens = 192;
    let mut own = shared.clone();
    own.name = "own".into();
    own.shared_prefix_tokens = 0;
    let results = run_with(MockConfig::default(), &[shared, own]);
    let (s, o) = (&results[0].metrics, &results[1].metrics);
    // The warm-up request caches the 12 shared blocks; each measured request then finds all
    // 192 shared tokens: 192 / 256 = 0.75.
    assert!(close(s.prefix_hit_rate, 0.75), "{}", s.prefix_hit_rate);
    assert_eq!(o.prefix_hit_rate, 0.0);
    assert!(s.avg_ttft_ms < o.avg_ttft_ms);
}

#[test]
fn speculative_decoding_accepts_at_the_configured_rate() {
    let config = MockConfig {
        num_speculative_tokens: 3,
        spec_accept_prob: 0.7,
        ..MockConfig::default()
    };
    let mut w = Workload::stress_test();
    w.output_tokens = 1024;
    let r = run_one(config, w);
    // Drafts are accepted in order until the first rejection: E[accepted] = p + p^2 + p^3,
    // so the rate is (0.7 + 0.49 + 0.343) / 3 = 0.511 (a little above: the last steps of a
    // request propose fewer drafts, which are accepted more often per draft).
    let rate = r.metrics.spec_accept_rate;
    assert!((rate - 0.511).abs() < 0.03, "{rate}");
    assert!(r.records.iter().all(|rec| rec.output_tokens == 1024));
    assert!(r.records[0].token_counts.iter().any(|&c| c > 1));
    let plain = run_one(MockConfig::default(), Workload::stress_test());
    assert_eq!(plain.metrics.spec_accept_rate, 0.0);
}

#[test]
fn fail_every_fails_exactly_those_requests() {
    let config = MockConfig {
        fail_every: 3,
        ..MockConfig::default()
    };
    // Arrivals: 1 warm-up then 5 measured; arrivals 3 and 6 fail (measured indices 1 and 4).
    let r = run_one(config, Workload::short_input());
    let failed: Vec<usize> = r
        .records
        .iter()
        .filter(|r| !r.success)
        .map(|r| r.index)
        .collect();
    assert_eq!(failed, vec![1, 4]);
    assert!(close(r.metrics.error_rate, 0.4));
    // A failed request keeps the tokens it streamed (half of 128).
    assert_eq!(r.records[1].stream_tokens, 64);
}

#[test]
fn open_loop_requests_start_on_schedule() {
    let mut w = Workload::short_input();
    w.arrival = Arrival::Poisson { rate: 2.0 };
    w.num_requests = 20;
    let r = run_one(MockConfig::default(), w);
    let first = r.records[0].start_ms;
    for rec in r.records.iter() {
        let scheduled = rec.scheduled_ms.unwrap();
        // Virtual time has no scheduling lag.
        assert!(close(rec.start_ms - first, scheduled), "{rec:?}");
    }
}

#[test]
fn constant_arrivals_start_every_one_over_rate_seconds() {
    let mut w = Workload::short_input();
    w.arrival = Arrival::Constant { rate: 4.0 };
    w.num_requests = 6;
    let r = run_one(MockConfig::default(), w.clone());
    for (i, rec) in r.records.iter().enumerate() {
        // Request i is meant for i / 4 s = 250 i ms, exactly.
        assert_eq!(rec.scheduled_ms, Some(250.0 * i as f64), "{rec:?}");
        let lag = rec.start_ms - rec.scheduled_ms.unwrap();
        assert!(lag >= 0.0, "negative lag {lag}");
    }
    // The same rate as a Poisson process gives another schedule.
    w.arrival = Arrival::Poisson { rate: 4.0 };
    let poisson = run_one(MockConfig::default(), w);
    let times = |r: &Measured| -> Vec<Option<f64>> {
        r.records.iter().map(|rec| rec.scheduled_ms).collect()
    };
    assert_ne!(times(&r), times(&poisson));
}

#[test]
fn goodput_counts_the_requests_within_every_objective() {
    // stress_test: eight requests see TTFT 89.92 ms and two 121.6 ms (see
    // `concurrent_requests_queue_and_decode_slower_in_a_bigger_batch`); a 100 ms TTFT
    // objective keeps eight of ten.
    let mut w = Workload::stress_test();
    w.goodput = Some(sagellm_bench::workload::slo::Slo::parse("ttft:100").unwrap());
    let m = run_one(MockConfig::default(), w).metrics;
    assert_eq!(m.goodput_fraction, Some(0.8));
    assert!(close(m.request_goodput_rps.unwrap(), 8.0 / m.total_time_s));
    assert_eq!(m.goodput_slo.unwrap().ttft_ms, Some(100.0));
    // Once all ten decode together a step takes 12 ms, above a 10 ms TBT objective: none.
    let mut w = Workload::stress_test();
    w.goodput = Some(sagellm_bench::workload::slo::Slo::parse("ttft:100,tbt:10").unwrap());
    assert_eq!(
        run_one(MockConfig::default(), w).metrics.goodput_fraction,
        Some(0.0)
    );
    // Without objectives there are no goodput figures.
    let m = run_one(MockConfig::default(), Workload::stress_test()).metrics;
    assert_eq!((m.request_goodput_rps, m.goodput_fraction), (None, None));
}

#[test]
fn two_runs_are_identical() {
    let a = run_with(MockConfig::default(), &Workload::year1());
    let b = run_with(MockConfig::default(), &Workload::year1());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.records, y.records);
        let (mut mx, mut my) = (x.metrics.clone(), y.metrics.clone());
        (mx.start_time, mx.end_time, my.start_time, my.end_time) = (0.0, 0.0, 0.0, 0.0);
        assert_eq!(mx, my);
    }
}

#[test]
fn memory_is_simulated_and_lies_between_weights_and_peak() {
    let r = run_one(MockConfig::default(), Workload::stress_test());
    let m = &r.metrics;
    let weights_mb = 2_200_000_000.0 / (1024.0 * 1024.0);
    assert!(m.avg_mem_mb > weights_mb && m.avg_mem_mb < m.peak_mem_mb);
    // Peak: weights plus the KV bytes in use at the peak.
    assert!(close(
        m.peak_mem_mb,
        weights_mb + m.kv_used_bytes as f64 / (1024.0 * 1024.0)
    ));
    let source = serde_json::to_value(m.sources.memory).unwrap();
    assert_eq!(source, "simulated");
}
