//! Properties of the metric aggregation that must hold for any set of request records, checked
//! on generated ones: percentiles are monotone and bounded, averages lie between the extremes,
//! counts add up, order does not matter, and two runs aggregated together equal one run over
//! the union (with exact order statistics it is the sorted merge of the two sample sets; the
//! inter-token gaps' HDR histograms merge to the histogram of both runs). ITL figures lie
//! within the documented bound of the exact ones.

use proptest::prelude::*;
use sagellm_bench::backend::{EngineFigures, ErrorKind, RequestError};
use sagellm_bench::results::itl::ItlStats;
use sagellm_bench::results::metrics::{aggregate, percentile, Stats, WallClock, WorkloadMetrics};
use sagellm_bench::results::record::{RawRequest, RequestRecord};
use sagellm_bench::results::samples::WorkloadSamples;

/// Relative slack for sums taken in a different order than the reference computes them.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn samples() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0f64..1e6, 0..200)
}

/// One request: its gaps between content events, tokens per event and whether they were
/// reasoning, a usage report or not, and a failure or not.
fn record() -> impl Strategy<Value = RequestRecord> {
    (
        0usize..1000,
        0.0f64..1e5,
        1usize..4096,
        0.0f64..5e3,
        prop::collection::vec((0.0f64..500.0, 1usize..4, prop::bool::weighted(0.3)), 0..40),
        prop::option::of(0usize..200),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(index, start_ms, prompt_tokens, ttft, events, usage, failure)| {
                let mut t = ttft;
                let mut token_times_ms = Vec::new();
                let mut token_counts = Vec::new();
                let mut reasoning_counts = Vec::new();
                for (gap, count, reasoning) in events {
                    token_times_ms.push(t);
                    token_counts.push(count);
                    reasoning_counts.push(if reasoning { count } else { 0 });
                    t += gap;
                }
                let error = failure.map(|k| {
                    let kind = [ErrorKind::Engine, ErrorKind::Http, ErrorKind::Timeout][k as usize];
                    RequestError::new(kind, "generated failure")
                });
                RequestRecord::new(RawRequest {
                    index,
                    start_ms,
                    scheduled_ms: None,
                    prompt_tokens,
                    finish_ms: token_times_ms.last().copied().unwrap_or(ttft),
                    token_times_ms,
                    token_counts,
                    reasoning_counts,
                    usage_tokens: usage,
                    tokenizer_tokens: None,
                    tokenizer_on_server: false,
                    error,
                    ..RawRequest::default()
                })
            },
        )
}

/// A per-request figure of a record.
type PerRequest = fn(&RequestRecord) -> Option<f64>;

fn records() -> impl Strategy<Value = Vec<RequestRecord>> {
    prop::collection::vec(record(), 0..60)
}

fn run(records: &[RequestRecord]) -> WorkloadMetrics {
    let wall = WallClock {
        start_unix_s: 1_700_000_000.0,
        total_time_s: 12.5,
    };
    aggregate("w", "mock", "m", records, wall, &EngineFigures::default())
}

fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// Merges two ascending sample sets into one ascending set.
fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(a.len() + b.len()));
    while i < a.len() || j < b.len() {
        if j == b.len() || (i < a.len() && a[i] <= b[j]) {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ttfts(records: &[RequestRecord]) -> Vec<f64> {
    records
        .iter()
        .filter(|r| r.success)
        .filter_map(|r| r.ttft_ms)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn percentiles_are_monotone_in_p_and_lie_within_min_and_max(
        values in samples(),
        mut ps in prop::collection::vec(0.0f64..=100.0, 2..20),
    ) {
        let values = sorted(values);
        ps.sort_by(f64::total_cmp);
        let at: Vec<f64> = ps.iter().map(|&p| percentile(&values, p)).collect();
        for pair in at.windows(2) {
            prop_assert!(pair[0] <= pair[1], "{at:?} at {ps:?}");
        }
        if let Some((min, max)) = min_max(&values) {
            for v in &at {
                prop_assert!(min <= *v && *v <= max);
            }
            prop_assert_eq!(percentile(&values, 0.0), min);
            prop_assert_eq!(percentile(&values, 100.0), max);
        }
    }

    #[test]
    fn stats_are_ordered_and_the_mean_lies_between_min_and_max(values in samples()) {
        let s = Stats::of(&values);
        prop_assert!(s.p50 <= s.p95 && s.p95 <= s.p99);
        prop_assert!(s.std >= 0.0);
        match min_max(&values) {
            None => prop_assert_eq!(s, Stats::default()),
            Some((min, max)) => {
                // The mean of values in [min, max] may round past either end by an ulp or so.
                let slack = 1e-12 * max.abs().max(1.0);
                prop_assert!(min - slack <= s.mean && s.mean <= max + slack, "{s:?}");
                prop_assert!(min <= s.p50 && s.p99 <= max);
            }
        }
    }

    #[test]
    fn reasoning_and_answer_figures_are_consistent(records in records()) {
        let m = run(&records);
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
        for r in &records {
            prop_assert!(r.reasoning_tokens <= r.stream_tokens);
            prop_assert_eq!(r.answer_tokens(), r.output_tokens.saturating_sub(r.reasoning_tokens));
            // The first answer token never comes before the first token of either kind.
            if let (Some(ttfo), Some(ttft)) = (r.ttfo(), r.ttft_ms) {
                prop_assert!(ttfo >= ttft);
            }
            // The answer's gaps span no more than the request's.
            let answer: f64 = r.answer_gaps().sum();
            let all: f64 = r.inter_token_gaps().sum();
            prop_assert!(answer <= all + 1e-9);
        }
        let reasoning: u64 = ok.iter().map(|r| r.reasoning_tokens as u64).sum();
        if reasoning == 0 {
            prop_assert_eq!(m.total_reasoning_tokens, None);
            prop_assert_eq!(m.avg_ttfo_ms, None);
        } else {
            prop_assert_eq!(m.total_reasoning_tokens, Some(reasoning));
            let answer: u64 = ok.iter().map(|r| r.answer_tokens() as u64).sum();
            prop_assert_eq!(m.total_answer_tokens, Some(answer));
            // Where usage counts at least the streamed reasoning, the two kinds add up to `n`.
            if ok.iter().all(|r| r.output_tokens >= r.reasoning_tokens) {
                prop_assert_eq!(reasoning + answer, m.total_output_tokens);
            }
            let ttfos: Vec<f64> = ok.iter().filter_map(|r| r.ttfo()).collect();
            if let Some((lo, hi)) = min_max(&ttfos) {
                let p50 = m.p50_ttfo_ms.unwrap();
                prop_assert!(lo <= p50 && p50 <= hi);
                prop_assert!(m.avg_ttfo_ms.unwrap() >= m.avg_ttft_ms - 1e-9 || ttfos.len() < ok.len());
            }
        }
    }

    #[test]
    fn counts_add_up(records in records()) {
        let m = run(&records);
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
        prop_assert_eq!(m.total_requests, records.len() as u64);
        prop_assert_eq!(m.total_requests, m.successful_requests + m.failed_requests);
        prop_assert_eq!(m.successful_requests, ok.len() as u64);
        let expected_rate = if records.is_empty() { 0.0 } else { m.failed_requests as f64 / m.total_requests as f64 };
        prop_assert_eq!(m.error_rate, expected_rate);
        prop_assert_eq!(m.total_output_tokens, ok.iter().map(|r| r.output_tokens as u64).sum::<u64>());
        prop_assert_eq!(m.total_input_tokens, ok.iter().map(|r| r.prompt_tokens as u64).sum::<u64>());
    }

    #[test]
    fn every_average_lies_between_the_per_request_extremes(records in records()) {
        let m = run(&records);
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
        let per_request: [(&str, f64, PerRequest); 5] = [
            ("ttft", m.avg_ttft_ms, |r| r.ttft_ms),
            ("tbt", m.avg_tbt_ms, |r| r.tbt_ms),
            ("tpot", m.avg_tpot_ms, |r| r.tpot_ms),
            ("e2el", m.avg_e2el_ms, |r| r.e2el_ms),
            ("throughput", m.avg_throughput_tps, |r| r.throughput_tps),
        ];
        for (name, avg, of) in per_request {
            let values: Vec<f64> = ok.iter().filter_map(|r| of(r)).collect();
            match min_max(&values) {
                None => prop_assert_eq!(avg, 0.0, "{}", name),
                Some((min, max)) => {
                    let slack = 1e-12 * max.abs().max(1.0);
                    prop_assert!(min - slack <= avg && avg <= max + slack, "{name}: {min} <= {avg} <= {max}");
                }
            }
        }
        let gaps: Vec<f64> = ok.iter().flat_map(|r| r.inter_token_gaps()).collect();
        if let Some((min, max)) = min_max(&gaps) {
            // Gaps are kept in whole nanoseconds: the extremes may move by half of one.
            let ns = 0.5e-6;
            prop_assert!(min - ns <= m.p50_itl_ms && m.p50_itl_ms <= m.p95_itl_ms && m.p95_itl_ms <= m.p99_itl_ms && m.p99_itl_ms <= max + ns);
        }
    }

    #[test]
    fn itl_figures_lie_within_the_documented_bound_of_the_exact_ones(records in records()) {
        let m = run(&records);
        let gaps: Vec<f64> = records
            .iter()
            .filter(|r| r.success)
            .flat_map(|r| r.inter_token_gaps())
            .collect();
        let exact = Stats::of(&gaps);
        // Each gap is rounded to whole nanoseconds (half of one, 0.5e-6 ms, at most), then the
        // mean and std are exact and each percentile within 1/2048 of the exact order
        // statistics it interpolates (docs/METRICS.md); 1e-9 covers the float arithmetic.
        let ns = 0.5e-6;
        prop_assert!((m.avg_itl_ms - exact.mean).abs() <= ns + 1e-9 * exact.mean, "{} vs {}", m.avg_itl_ms, exact.mean);
        prop_assert!((m.std_itl_ms - exact.std).abs() <= 2.0 * ns + 1e-9 * exact.mean, "{} vs {}", m.std_itl_ms, exact.std);
        for (estimate, exact) in [(m.p50_itl_ms, exact.p50), (m.p95_itl_ms, exact.p95), (m.p99_itl_ms, exact.p99)] {
            let bound = (exact + ns) / 2048.0 + ns + 1e-9 * exact + 1e-12;
            prop_assert!((estimate - exact).abs() <= bound, "{estimate} vs {exact}");
        }
    }

    #[test]
    fn merging_two_runs_itl_histograms_equals_one_run_over_both(a in records(), b in records()) {
        let itl = |records: &[RequestRecord]| WorkloadSamples::from_records(records).itl().clone();
        let mut merged: ItlStats = itl(&a);
        merged.merge(&itl(&b));
        let union: Vec<RequestRecord> = a.iter().chain(&b).cloned().collect();
        let together = itl(&union);
        prop_assert_eq!(&merged, &together);
        for p in [0.0, 50.0, 95.0, 99.0, 100.0] {
            prop_assert_eq!(merged.percentile_ms(p), together.percentile_ms(p));
        }
        prop_assert_eq!((merged.mean_ms(), merged.std_ms()), (together.mean_ms(), together.std_ms()));
    }

    #[test]
    fn the_order_of_the_records_does_not_matter(
        (records, order) in records().prop_flat_map(|r| {
            let n = r.len();
            (Just(r), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
        })
    ) {
        let shuffled: Vec<RequestRecord> = order.iter().map(|&i| records[i].clone()).collect();
        // Bit for bit: every statistic sorts its samples before summing them.
        prop_assert_eq!(run(&records), run(&shuffled));
    }

    #[test]
    fn two_runs_aggregated_together_equal_one_run_over_their_union(
        a in records(),
        b in records(),
    ) {
        let union: Vec<RequestRecord> = a.iter().chain(&b).cloned().collect();
        let together = run(&union);
        let (ma, mb) = (run(&a), run(&b));
        // Counts and sums merge by addition.
        prop_assert_eq!(together.total_requests, ma.total_requests + mb.total_requests);
        prop_assert_eq!(together.successful_requests, ma.successful_requests + mb.successful_requests);
        prop_assert_eq!(together.failed_requests, ma.failed_requests + mb.failed_requests);
        prop_assert_eq!(together.total_output_tokens, ma.total_output_tokens + mb.total_output_tokens);
        prop_assert_eq!(together.total_input_tokens, ma.total_input_tokens + mb.total_input_tokens);
        // Means merge weighted by their sample counts.
        let (ta, tb) = (ttfts(&a), ttfts(&b));
        if !ta.is_empty() || !tb.is_empty() {
            let weighted = (ma.avg_ttft_ms * ta.len() as f64 + mb.avg_ttft_ms * tb.len() as f64)
                / (ta.len() + tb.len()) as f64;
            prop_assert!(close(together.avg_ttft_ms, weighted), "{} vs {weighted}", together.avg_ttft_ms);
        }
        // Exact percentiles merge as the sorted merge of the two sample sets: merging two
        // runs' samples gives exactly what one run over both reports.
        let merged = Stats::of(&merge_sorted(&sorted(ta), &sorted(tb)));
        prop_assert_eq!(
            (together.p50_ttft_ms, together.p95_ttft_ms, together.p99_ttft_ms, together.avg_ttft_ms, together.std_ttft_ms),
            (merged.p50, merged.p95, merged.p99, merged.mean, merged.std)
        );
        // And the merge does not care which run comes first.
        let swapped: Vec<RequestRecord> = b.iter().chain(&a).cloned().collect();
        prop_assert_eq!(run(&swapped), together);
    }
}
