//! `--percentiles` (vLLM's `--metric-percentiles`): the extra percentiles of TTFT, TPOT, ITL
//! and E2E latency, against values worked out by hand from a records file written here, from
//! the mock's documented timings, and in the metrics JSON, the table and the markdown.

use std::collections::BTreeMap;
use std::sync::Arc;

use sagellm_bench::backend::mock::{MockBackend, MockConfig};
use sagellm_bench::report::files::load_samples;
use sagellm_bench::results::metrics::{aggregate_samples, WallClock, WorkloadMetrics};
use sagellm_bench::results::summary::{Provenance, Summary};
use sagellm_bench::Workload;

mod support;
use support::Collect;

/// One successful request sent at `start`, with a token at `ttft` and one `gap` later; its
/// derived figures (TTFT, E2E = ttft + gap, TBT = gap, TPOT = E2E / 2) as the records file
/// holds them.
fn record_line(index: usize, start: f64, ttft: f64, gap: f64) -> String {
    let e2e = ttft + gap;
    format!(
        r#"{{"index":{index},"start_ms":{start},"scheduled_ms":null,"prompt_tokens":8,"output_tokens":2,"output_tokens_source":"stream","stream_tokens":2,"usage_tokens":null,"token_times_ms":[{ttft},{e2e}],"token_counts":[1,1],"finish_ms":{e2e},"success":true,"error":null,"ttft_ms":{ttft},"e2el_ms":{e2e},"tbt_ms":{gap},"tpot_ms":{tpot},"throughput_tps":{tps}}}"#,
        tpot = e2e / 2.0,
        tps = 2000.0 / e2e
    )
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}

#[test]
fn extra_percentiles_from_a_records_file_match_the_hand_computed_order_statistics() {
    // Five requests: TTFT 10, 20, 30, 40, 100 ms; gaps 1, 2, 3, 4, 10 ms; so E2E 11, 22, 33,
    // 44, 110 and TPOT (E2E / 2 tokens) 5.5, 11, 16.5, 22, 55. The pooled ITL gaps are the
    // five gaps. With n = 5, percentile p sits at rank h = 4p/100 between the order
    // statistics floor(h) and ceil(h):
    //   p90:   h = 3.6:   40 + 0.6 * 60 = 76;      ITL 4 + 0.6 * 6 = 7.6;
    //          E2E 44 + 0.6 * 66 = 83.6;           TPOT 22 + 0.6 * 33 = 41.8
    //   p75:   h = 3:     TTFT 40, ITL 4, E2E 44, TPOT 22
    //   p99.9: h = 3.996: TTFT 40 + 0.996 * 60 = 99.76; ITL 4 + 0.996 * 6 = 9.976;
    //          E2E 44 + 0.996 * 66 = 109.736;      TPOT 22 + 0.996 * 33 = 54.868
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w_requests.jsonl");
    let lines: Vec<String> = [
        (10.0, 1.0),
        (20.0, 2.0),
        (30.0, 3.0),
        (40.0, 4.0),
        (100.0, 10.0),
    ]
    .iter()
    .enumerate()
    .map(|(i, (ttft, gap))| record_line(i, 200.0 * i as f64, *ttft, *gap))
    .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let samples = load_samples(&path).unwrap();
    let wall = WallClock {
        start_unix_s: 0.0,
        total_time_s: 0.91,
    };
    let mut m = aggregate_samples("w", "mock", "m", &samples, wall, &Default::default());
    // Asked in any order, with repeats and the fixed ones among them: p50 and p99 stay in
    // their own fields and are not repeated.
    m.set_percentiles(&[99.9, 50.0, 90.0, 75.0, 90.0, 99.0], &samples);
    let got: Vec<f64> = m.percentiles.0.iter().map(|e| e.p).collect();
    assert_eq!(got, [75.0, 90.0, 99.9]);
    // The ITL comes from the HDR histogram, within 0.05% of the exact order statistics.
    let expected = [
        (75.0, 40.0, 22.0, 4.0, 44.0),
        (90.0, 76.0, 41.8, 7.6, 83.6),
        (99.9, 99.76, 54.868, 9.976, 109.736),
    ];
    for (e, (p, ttft, tpot, itl, e2el)) in m.percentiles.0.iter().zip(expected) {
        assert_eq!(e.p, p);
        assert!(close(e.ttft_ms, ttft, 1e-12), "p{p} TTFT {}", e.ttft_ms);
        assert!(close(e.tpot_ms, tpot, 1e-12), "p{p} TPOT {}", e.tpot_ms);
        assert!(close(e.itl_ms, itl, 5e-4), "p{p} ITL {}", e.itl_ms);
        assert!(close(e.e2el_ms, e2el, 1e-12), "p{p} E2E {}", e.e2el_ms);
    }
    // The fixed fields are unchanged by the extra ones: p50 TTFT is the middle value, 30.
    assert_eq!(m.p50_ttft_ms, 30.0);

    // In the JSON, vLLM's key names, beside the documented fields; read back the same.
    let json = serde_json::to_value(&m).unwrap();
    let keys: BTreeMap<&str, f64> = json
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("p75_") || k.starts_with("p90_") || k.starts_with("p99.9_"))
        .map(|(k, v)| (k.as_str(), v.as_f64().unwrap()))
        .collect();
    assert_eq!(keys.len(), 12, "{keys:?}");
    assert_eq!(keys["p90_ttft_ms"], m.percentiles.0[1].ttft_ms);
    assert_eq!(keys["p99.9_e2el_ms"], m.percentiles.0[2].e2el_ms);
    assert!(keys.contains_key("p75_tpot_ms") && keys.contains_key("p90_itl_ms"));
    assert_eq!(json["p50_ttft_ms"], 30.0);
    let back: WorkloadMetrics = serde_json::from_value(json).unwrap();
    assert_eq!(back, m);
    // A file with half of a percentile's keys is refused, naming the missing ones.
    let mut broken = serde_json::to_value(&m).unwrap();
    broken.as_object_mut().unwrap().remove("p90_itl_ms");
    let err = serde_json::from_value::<WorkloadMetrics>(broken)
        .unwrap_err()
        .to_string();
    assert!(err.contains("p90_itl_ms"), "{err}");
}

#[test]
fn the_mock_reports_asked_percentiles_in_the_json_table_and_markdown() {
    // stress_test on the mock: eight requests see a TTFT of 89.92 ms and two 121.6 ms (see
    // tests/mock_engine.rs). With n = 10, p85 is at rank h = 9 * 0.85 = 7.65: between the 8th
    // smallest (89.92) and the 9th (121.6): 89.92 + 0.65 * 31.68 = 110.512 ms. p90 is at h =
    // 8.1, both neighbours 121.6.
    let workload = Workload {
        percentiles: vec![85.0, 90.0],
        ..Workload::stress_test()
    };
    let backend = Arc::new(MockBackend::new(MockConfig::default(), None).unwrap());
    let mut collect = Collect::default();
    let provenance = Provenance::now("mock", "mock", serde_json::Value::Null);
    let summary: Summary =
        sagellm_bench::run(backend, &[workload], provenance, &mut collect).unwrap();
    let m = &collect.measured()[0].metrics;
    let p85 = m.percentiles.0[0];
    assert_eq!(p85.p, 85.0);
    assert!(close(p85.ttft_ms, 110.512, 1e-9), "{}", p85.ttft_ms);
    assert!(close(m.percentiles.0[1].ttft_ms, 121.6, 1e-9));
    let table = sagellm_bench::report::table::render(&summary);
    let row = table
        .lines()
        .find(|l| l.contains("TTFT / TPOT / ITL / E2E p85 (ms)"))
        .unwrap_or_else(|| panic!("no p85 row in\n{table}"));
    assert!(row.contains("110.51 / "), "{row}");
    assert!(table.contains("TTFT / TPOT / ITL / E2E p90 (ms)"));
    #[cfg(feature = "charts")]
    {
        let md = sagellm_bench::report::markdown::render_with_charts(&summary, None);
        assert!(
            md.contains("| TTFT / TPOT / ITL / E2E p85 (ms) | 110.51 / "),
            "{md}"
        );
    }
}
