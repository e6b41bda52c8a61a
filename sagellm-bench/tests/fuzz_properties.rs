//! The fuzz targets' entry points under proptest, in the normal test suite (no fuzzer needed):
//! `/metrics` scrapes of known names with hostile labels and values, and a real run's report and
//! compare inputs with numbers swapped for hostile ones, cut short, or given a byte-order mark.
//! Every entry point must return without panicking and, for the scrapes, derive only finite,
//! in-range figures (the entry point asserts it).

use proptest::prelude::*;
use sagellm_bench::__fuzz::{self, PART_SEPARATOR};

fn seed(path: &str) -> Vec<u8> {
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    std::fs::read(fuzz.join(path)).unwrap()
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.join(&[PART_SEPARATOR][..])
}

/// A Prometheus line: a name the scraper reads, labels, a value, any of them hostile.
fn line() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("vllm:prefix_cache_hits_total"),
        Just("vllm:prefix_cache_queries_total"),
        Just("vllm:kv_cache_usage_perc"),
        Just("vllm:cache_config_info"),
        Just("vllm:num_preemptions_total"),
        Just("vllm:spec_decode_num_draft_tokens_total"),
        Just("vllm:spec_decode_num_accepted_tokens_total"),
        Just("vllm:request_queue_time_seconds_sum"),
        Just("vllm:request_queue_time_seconds_count"),
        Just("vllm:time_to_first_token_seconds_sum"),
        Just("vllm:time_to_first_token_seconds_count"),
        Just("sglang:num_used_tokens"),
        Just("sglang:cache_hit_rate"),
        Just("sglang:spec_accept_length"),
        Just("llamacpp:kv_cache_tokens"),
        Just("llamacpp:prompt_seconds_total"),
        Just("lmdeploy:gpu_cache_usage_perc"),
        Just("process_resident_memory_bytes"),
        Just("# TYPE vllm:prefix_cache_hits_total counter"),
        Just("# HELP x y"),
    ];
    let labels = prop_oneof![
        Just(String::new()),
        Just("{engine=\"0\"}".to_string()),
        Just("{tp_rank=\"1\"}".to_string()),
        Just("{num_gpu_blocks=\"1e300\",block_size=\"0\"}".to_string()),
        Just("{x=\"}".to_string()),
        Just("}{".to_string()),
        "[{}=\",a-z0-9]{0,16}",
    ];
    let value = prop_oneof![
        Just("NaN".to_string()),
        Just("+Inf".to_string()),
        Just("-Inf".to_string()),
        Just("-0".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("4.9e-324".to_string()),
        Just("18446744073709551615".to_string()),
        (0u64..100_000).prop_map(|v| v.to_string()),
        (0.0f64..1.0).prop_map(|v| v.to_string()),
        "[0-9.eE+-]{0,10}",
    ];
    (name, labels, value, "( [0-9]{1,13})?").prop_map(|(n, l, v, t)| format!("{n}{l} {v}{t}"))
}

/// A JSON number or token a hand-edited or hostile file could hold in place of a figure.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NaN".to_string()),
        Just("1e400".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551615".to_string()),
        Just("18446744073709551616".to_string()),
        Just("null".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
    ]
}

/// `text` with its `k`-th number (counting from 0, wrapping) swapped for `value`.
fn swap_number(text: &str, k: usize, value: &str) -> String {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || b".eE+-".contains(&bytes[i])) {
                i += 1;
            }
            starts.push((start, i));
        } else {
            i += 1;
        }
    }
    match starts.get(k % starts.len().max(1)) {
        Some(&(a, b)) => format!("{}{value}{}", &text[..a], &text[b..]),
        None => text.to_string(),
    }
}

/// One file of a run, perhaps damaged: a number swapped, cut short, a byte-order mark.
fn damaged(file: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let text = String::from_utf8(file).unwrap();
    (any::<usize>(), hostile_value(), any::<bool>(), 0.0f64..1.2).prop_map(
        move |(k, value, bom, keep)| {
            let mut out = swap_number(&text, k, &value).into_bytes();
            if keep < 1.0 {
                out.truncate((out.len() as f64 * keep) as usize);
            }
            if bom {
                out.splice(0..0, "\u{feff}".bytes());
            }
            out
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn scrapes_never_panic_or_give_non_finite_figures(
        before in proptest::collection::vec(line(), 0..16),
        after in proptest::collection::vec(line(), 0..16),
    ) {
        __fuzz::prometheus(&join(&[before.join("\n").into_bytes(), after.join("\n").into_bytes()]));
    }

    #[test]
    fn damaged_report_inputs_never_panic(
        summary in damaged(seed("summary/benchmark_summary.json")),
        metrics in damaged(seed("saved_workload/short_input_metrics.json")),
        records in damaged(seed("saved_workload/short_input_requests.jsonl")),
        killed in damaged(seed("saved_workload/short_input_requests.jsonl")),
    ) {
        __fuzz::report_inputs(&join(&[summary, metrics, records, killed]));
    }

    #[test]
    fn damaged_compare_inputs_never_panic(
        a in damaged(seed("summary/benchmark_summary.json")),
        b in damaged(seed("summary/benchmark_summary.json")),
        metrics_a in damaged(seed("saved_workload/short_input_metrics.json")),
        records_a in damaged(seed("saved_workload/short_input_requests.jsonl")),
        metrics_b in damaged(seed("saved_workload/short_input_metrics.json")),
        records_b in damaged(seed("saved_workload/short_input_requests.jsonl")),
    ) {
        __fuzz::compare_inputs(&join(&[a, b, metrics_a, records_a, metrics_b, records_b]));
    }
}
