//! GPT-2 and OPT, written here on candle-nn, against logits that Hugging Face transformers
//! (PyTorch, float32) computed on the same tiny random-weight models. The models, tokenizers and
//! logits are in sagellm-bench/tests/data/tiny-{gpt2,opt}/, produced by scripts/reference/make_tiny_models.py.

use std::path::PathBuf;

use sagellm_bench::backend::cpu::{DirectModel, WeightDtype};

struct Reference {
    produced_by: String,
    input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

fn reference(folder: &str) -> (PathBuf, Reference) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(folder);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let input_ids = json["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let logits = json["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let produced_by = json["produced_by"].as_str().unwrap_or_default().to_string();
    (
        dir,
        Reference {
            produced_by,
            input_ids,
            logits,
        },
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every position through the KV cache, and the last one from a single prefill, within 1e-4 of
/// the reference (which is rounded to 6 decimals).
fn matches_reference(folder: &str, architecture: &str) {
    let (dir, r) = reference(folder);
    let model = DirectModel::load(dir.to_str().unwrap(), WeightDtype::F32).unwrap();
    assert_eq!(model.architecture(), architecture);
    let text = "the model server token cache batch latency request stream memory prefix decode";
    assert_eq!(
        model.encode(text).unwrap(),
        r.input_ids,
        "tokenizer.json applies"
    );
    let stepwise = model.stepwise_logits(&r.input_ids).unwrap();
    for (position, (ours, theirs)) in stepwise.iter().zip(&r.logits).enumerate() {
        let diff = max_abs_diff(ours, theirs);
        assert!(
            diff < 1e-4,
            "{folder} position {position}: max |diff| {diff} against {}",
            r.produced_by
        );
    }
    let last = model.prefill_logits(&r.input_ids).unwrap();
    let diff = max_abs_diff(&last, r.logits.last().unwrap());
    assert!(diff < 1e-4, "{folder} prefill: {diff}");
}

#[test]
fn gpt2_matches_transformers_logits() {
    matches_reference("tiny-gpt2", "gpt2");
}

#[test]
fn opt_matches_transformers_logits() {
    matches_reference("tiny-opt", "opt");
}
