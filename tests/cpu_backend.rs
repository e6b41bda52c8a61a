//! The `cpu` backend on a tiny random-weight llama that the tests write themselves (GGUF and
//! Hugging Face folder): every loading path, the KV cache, prompt lengths, streaming through the
//! runner, prefix reuse, evictions, and the errors a user sees. No network.

#[path = "common/tiny_llama.rs"]
mod tiny_llama;

use std::process::Command;
use std::sync::Arc;

use sagellm_bench::backend::cpu::{CpuConfig, DirectModel, PrefillWeights, WeightDtype};
use sagellm_bench::backend::spec::BackendSpec;
use sagellm_bench::backend::Backend;
use sagellm_bench::report::Reports;
use sagellm_bench::results::summary::Provenance;
use sagellm_bench::{Arrival, Summary, Workload};

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load(path: &std::path::Path, dtype: WeightDtype) -> DirectModel {
    DirectModel::load(path.to_str().unwrap(), dtype).unwrap()
}

#[test]
fn gguf_and_safetensors_hold_the_same_model() {
    let tiny = tiny_llama::write_all();
    let gguf = load(&tiny.gguf_f32, WeightDtype::Auto);
    let folder = load(&tiny.folder, WeightDtype::Auto);
    let prompt = gguf.encode("the model server the token cache").unwrap();
    assert_eq!(
        prompt,
        folder.encode("the model server the token cache").unwrap()
    );
    assert!(prompt.contains(&(256 + 2)), "the merges apply: {prompt:?}");
    let diff = max_abs_diff(
        &gguf.prefill_logits(&prompt).unwrap(),
        &folder.prefill_logits(&prompt).unwrap(),
    );
    assert!(
        diff < 1e-3,
        "GGUF (interleaved rotary) and safetensors differ by {diff}"
    );
    let a = gguf.greedy_timed(&prompt, 24).unwrap().output;
    let b = folder.greedy_timed(&prompt, 24).unwrap().output;
    assert_eq!(a, b);
    assert_eq!(a.len(), 24);
}

#[test]
fn quantized_files_load_and_stay_close_to_their_f32_values() {
    let tiny = tiny_llama::write_all();
    let prompt = load(&tiny.gguf_f32, WeightDtype::F32)
        .encode("the prefill decode the engine")
        .unwrap();
    // Each file against its own values dequantized to f32: what a format change may cost.
    for (path, dtype, tolerance) in [
        (&tiny.gguf_q8_0, WeightDtype::Auto, 0.05),
        (&tiny.gguf_q4_1, WeightDtype::Auto, 0.05),
        (&tiny.gguf_q4_1, WeightDtype::Keep, 0.05),
        (&tiny.gguf_f32, WeightDtype::Q8_0, 0.05),
        (&tiny.folder, WeightDtype::Q8_0, 0.05),
        (&tiny.gguf_f32, WeightDtype::Q4_0, 0.5),
    ] {
        let reference = load(path, WeightDtype::F32)
            .prefill_logits(&prompt)
            .unwrap();
        let model = load(path, dtype);
        let logits = model.prefill_logits(&prompt).unwrap();
        let spread = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(&logits, &reference);
        assert!(
            diff < tolerance * spread,
            "{path:?} {dtype:?}: diff {diff} of {spread}"
        );
        assert_eq!(model.greedy_timed(&prompt, 8).unwrap().output.len(), 8);
    }
    // Auto and Keep multiply the Q4_1 matrices as stored (our Q4_1 kernel); q8_0 holds more
    // bits per weight.
    let auto = load(&tiny.gguf_q4_1, WeightDtype::Auto);
    let keep = load(&tiny.gguf_q4_1, WeightDtype::Keep);
    let q8 = load(&tiny.gguf_q4_1, WeightDtype::Q8_0);
    assert_eq!(auto.formats(), keep.formats());
    assert_eq!(auto.weight_bytes(), keep.weight_bytes());
    assert!(q8.weight_bytes() > keep.weight_bytes());
}

/// A format whose blocks do not divide a matrix's rows falls back to the nearest 32-value
/// format (as llama-quantize does), never silently to f32, and says so: the tiny model's rows
/// (64 and 128 values) hold no 256-value K-quant block.
#[test]
fn formats_that_do_not_fit_fall_back_and_say_so() {
    let tiny = tiny_llama::write_all();
    let prompt = load(&tiny.gguf_f32, WeightDtype::F32)
        .encode("the prefill decode the engine")
        .unwrap();
    let reference = load(&tiny.gguf_f32, WeightDtype::F32)
        .prefill_logits(&prompt)
        .unwrap();
    let spread = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let q8 = load(&tiny.gguf_f32, WeightDtype::Q8_0);
    assert!(q8.formats().fallbacks.is_empty(), "{:?}", q8.formats());
    assert_eq!(q8.formats().used["attn_q"]["q8_0"], tiny_llama::LAYERS);
    for (dtype, requested, used, tolerance) in [
        (WeightDtype::Q4k, "q4k", "q5_0", 0.2),
        (WeightDtype::Q6k, "q6k", "q8_0", 0.05),
    ] {
        for path in [&tiny.gguf_f32, &tiny.folder] {
            let model = load(path, dtype);
            let formats = model.formats();
            // Every matrix, the output head included, in the fallback format; none in f32.
            for (kind, counts) in &formats.used {
                assert_eq!(counts.keys().collect::<Vec<_>>(), [used], "{path:?} {kind}");
            }
            let fell_back: usize = formats.fallbacks.iter().map(|f| f.count).sum();
            assert_eq!(fell_back, 7 * tiny_llama::LAYERS + 1, "{formats:?}");
            for f in &formats.fallbacks {
                assert_eq!((f.requested.as_str(), f.used.as_str()), (requested, used));
                assert_eq!(f.requested_block, 256);
                assert!([64, 128].contains(&f.row_values), "{f:?}");
            }
            let logits = model.prefill_logits(&prompt).unwrap();
            let diff = max_abs_diff(&logits, &reference);
            assert!(
                diff < tolerance * spread,
                "{dtype:?}: diff {diff} of {spread}"
            );
        }
    }
    // Q5_0 (5.5 bits a weight) reads fewer bytes than Q8_0 (8.5).
    assert!(load(&tiny.gguf_f32, WeightDtype::Q4k).weight_bytes() < q8.weight_bytes());
}

/// The run's provenance lists the formats, the fallbacks and the bytes read per token.
#[test]
fn the_settings_list_formats_fallbacks_and_bytes_per_token() {
    let tiny = tiny_llama::write_all();
    let config = CpuConfig {
        dtype: WeightDtype::Q4k,
        ..CpuConfig::default()
    };
    let settings = tiny_backend(&tiny.gguf_f32, config).settings();
    assert_eq!(
        settings["weight_formats"]["ffn_down"]["q5_0"],
        tiny_llama::LAYERS
    );
    assert_eq!(settings["weight_formats"]["output"]["q5_0"], 1);
    let fallbacks = settings["weight_fallbacks"].as_array().unwrap();
    assert!(
        fallbacks
            .iter()
            .any(|f| f["matrices"] == "attn_q" && f["used"] == "q5_0" && f["requested"] == "q4k"),
        "{settings}"
    );
    assert!(settings["weight_bytes_per_token"].as_u64().unwrap() > 0);
    assert_eq!(settings["prefill_weights"], "dequantize");
    assert_eq!(settings["prefill_copy_bytes"], 0);
    let copies = CpuConfig {
        dtype: WeightDtype::Q8_0,
        prefill_weights: PrefillWeights::F32Copy,
        ..CpuConfig::default()
    };
    let settings = tiny_backend(&tiny.gguf_f32, copies).settings();
    assert!(settings["weight_fallbacks"].as_array().unwrap().is_empty());
    // Seven block matrices per layer as f32; the output head keeps no copy.
    let per_layer = 4
        * (2 * tiny_llama::HIDDEN * tiny_llama::HIDDEN
            + 2 * tiny_llama::HIDDEN * 16 * tiny_llama::KV_HEADS
            + 3 * tiny_llama::HIDDEN * tiny_llama::FFN);
    assert_eq!(
        settings["prefill_copy_bytes"],
        per_layer * tiny_llama::LAYERS,
        "{settings}"
    );
}

/// Every prefill path gives the logits of the decode weights' values: the f32 GEMM on the
/// dequantized values, or the quantized kernel.
#[test]
fn every_prefill_path_stays_close_to_f32() {
    let tiny = tiny_llama::write_all();
    let f32_model = load(&tiny.gguf_q8_0, WeightDtype::F32);
    let text = "the queue block layer weight tensor attention server cache model";
    // Long enough for the prefill paths (at least DENSE_MIN_ROWS tokens).
    let prompt = f32_model.prompt_ids(text, 40).unwrap();
    let reference = f32_model.prefill_logits(&prompt).unwrap();
    let spread = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let mut runs = Vec::new();
    for prefill in [
        PrefillWeights::F32Copy,
        PrefillWeights::Dequantize,
        PrefillWeights::Quantized,
    ] {
        let model =
            DirectModel::load_with(tiny.gguf_q8_0.to_str().unwrap(), WeightDtype::Auto, prefill)
                .unwrap();
        let logits = model.prefill_logits(&prompt).unwrap();
        // The output head multiplies in Q8_0 whatever the path (it sees the last position
        // only), rounding its input to 8 bits: the format's own error, as for decode.
        let diff = max_abs_diff(&logits, &reference);
        assert!(diff < 0.05 * spread, "{prefill:?}: diff {diff} of {spread}");
        runs.push((logits, model.greedy_timed(&prompt, 8).unwrap().output));
    }
    // The kept copy and the per-chunk dequantization hold the same values, multiplied by the
    // same GEMM.
    assert_eq!(runs[0], runs[1]);
}

#[test]
fn decoding_through_the_kv_cache_matches_a_full_prefill() {
    let tiny = tiny_llama::write_all();
    for path in [&tiny.gguf_f32, &tiny.folder] {
        let model = load(path, WeightDtype::Auto);
        let tokens = model
            .encode("the queue block layer weight tensor attention")
            .unwrap();
        let stepwise = model.stepwise_logits(&tokens).unwrap();
        for n in [1, tokens.len() / 2, tokens.len()] {
            let full = model.prefill_logits(&tokens[..n]).unwrap();
            let diff = max_abs_diff(&stepwise[n - 1], &full);
            assert!(diff < 1e-3, "{path:?} position {n}: {diff}");
        }
    }
}

/// Batched decode (one forward pass for all sequences, each attending to its own cache) against
/// one forward pass per sequence, for sequences of different lengths: the same greedy tokens,
/// and logits equal up to float rounding.
#[test]
fn batched_decode_matches_decoding_each_sequence_alone() {
    let tiny = tiny_llama::write_all();
    // f32 weights (gemm), Q8_0 and Q4_1 (our kernels), safetensors (halves rotary).
    for path in [
        &tiny.gguf_f32,
        &tiny.gguf_q8_0,
        &tiny.gguf_q4_1,
        &tiny.folder,
    ] {
        let model = load(path, WeightDtype::Auto);
        let text = "the queue block layer weight tensor attention server cache model";
        let prompts: Vec<Vec<u32>> = [3, 17, 40, 1, 9]
            .iter()
            .map(|&n| model.prompt_ids(text, n).unwrap())
            .collect();
        let alone = model.greedy_side_by_side(&prompts, 12, false).unwrap();
        let batched = model.greedy_side_by_side(&prompts, 12, true).unwrap();
        assert_eq!(batched.output, alone.output, "{path:?}");
        for (seq, (a, b)) in alone
            .decode_logits
            .iter()
            .zip(&batched.decode_logits)
            .enumerate()
        {
            assert_eq!(a.len(), 11);
            for (step, (a, b)) in a.iter().zip(b).enumerate() {
                // The quantized kernels quantize and multiply each row on its own, so a batch
                // changes nothing there; f32 matrix products may sum in another order for
                // several rows than for one (relative rounding of about 1e-7 per operation).
                // A wrong position or cache would move logits by their own size.
                let spread = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let diff = max_abs_diff(a, b);
                assert!(
                    diff <= 1e-5 * spread,
                    "{path:?} sequence {seq} step {step}: diff {diff} of {spread}"
                );
            }
        }
    }
}

#[test]
fn prompts_are_cut_or_repeated_to_the_exact_length() {
    let tiny = tiny_llama::write_all();
    let model = load(&tiny.gguf_f32, WeightDtype::Auto);
    let text = "the model server token";
    let natural = model.encode(text).unwrap();
    for length in [1, 3, natural.len(), 50, 300] {
        let ids = model.prompt_ids(text, length).unwrap();
        assert_eq!(ids.len(), length);
        let shared = length.min(natural.len());
        assert_eq!(ids[..shared], natural[..shared]);
    }
}

fn tiny_backend(path: &std::path::Path, config: CpuConfig) -> Arc<dyn Backend> {
    let model = path.to_str().unwrap().to_string();
    BackendSpec::Cpu { model, config }.build().unwrap()
}

fn run(backend: Arc<dyn Backend>, workload: Workload) -> Summary {
    let provenance = Provenance::now(backend.name(), backend.model(), backend.settings());
    sagellm_bench::run(backend, &[workload], provenance, &mut Reports::default()).unwrap()
}

fn workload(
    name: &str,
    prompt: usize,
    output: usize,
    requests: usize,
    concurrency: usize,
) -> Workload {
    let mut w = Workload::new(name, prompt, output, requests);
    w.arrival = Arrival::Closed { concurrency };
    w
}

#[test]
fn requests_stream_every_token_with_measured_kv_figures() {
    let tiny = tiny_llama::write_all();
    let backend = tiny_backend(&tiny.gguf_q8_0, CpuConfig::default());
    assert!(backend.model_in_process());
    let summary = run(backend, workload("concurrent", 40, 12, 6, 3));
    let m = &summary.workloads["concurrent"];
    assert_eq!(m.successful_requests, 6, "{m:?}");
    assert_eq!(m.total_output_tokens, 6 * 12);
    assert_eq!(m.total_input_tokens, 6 * 40);
    assert!(m.avg_ttft_ms > 0.0 && m.avg_tpot_ms > 0.0, "{m:?}");
    assert!(
        m.kv_used_tokens >= 3 * 40,
        "three sequences at once: {}",
        m.kv_used_tokens
    );
    // K and V, 2 layers, 2 KV heads of 16 f32 values per token.
    let per_token = 2 * tiny_llama::LAYERS * tiny_llama::KV_HEADS * 16 * 4;
    assert_eq!(m.kv_used_bytes as usize % per_token, 0);
    assert!(m.kv_used_bytes as usize >= m.kv_used_tokens as usize * per_token / 2);
    assert!(m.peak_mem_mb > 0.0, "memory is sampled in process");
    let json = serde_json::to_value(m).unwrap();
    assert_eq!(json["sources"]["kv_cache"], "measured");
}

#[test]
fn every_batch_size_streams_every_token() {
    let tiny = tiny_llama::write_all();
    // 1: sequential; 2: batches of 2 and a last batch of 1; 16: all five at once.
    for max_batch in [1, 2, 16] {
        let config = CpuConfig {
            max_batch,
            ..CpuConfig::default()
        };
        let backend = tiny_backend(&tiny.gguf_q8_0, config);
        assert_eq!(backend.settings()["max_batch"], max_batch);
        let summary = run(backend, workload("batched", 24, 10, 10, 5));
        let m = &summary.workloads["batched"];
        assert_eq!(m.successful_requests, 10, "max_batch {max_batch}: {m:?}");
        assert_eq!(m.total_output_tokens, 10 * 10);
    }
    let zero = CpuConfig {
        max_batch: 0,
        ..CpuConfig::default()
    };
    let model = tiny.gguf_q8_0.to_str().unwrap().to_string();
    let error = BackendSpec::Cpu {
        model,
        config: zero,
    }
    .build()
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("max_batch"), "{error}");
}

/// What one request's stream told, with the engine's stamps: when it was admitted (its
/// `PrefixCached` event) and each token's text.
#[derive(Default)]
struct Stamps {
    admitted: Option<std::time::Duration>,
    tokens: Vec<(std::time::Duration, String)>,
}

impl Stamps {
    /// Reads `stream` until its `Done`, or until `at_most` tokens in all were read.
    fn read(
        &mut self,
        stream: &mut futures::stream::BoxStream<'static, sagellm_bench::StreamEvent>,
        at_most: usize,
    ) {
        use futures::StreamExt;
        use sagellm_bench::StreamEvent;
        while self.tokens.len() < at_most {
            let event =
                futures::executor::block_on(stream.next()).expect("a stream ends with Done");
            let StreamEvent::Stamped { at, event } = event else {
                panic!("the cpu backend stamps every event: {event:?}");
            };
            match *event {
                StreamEvent::Tokens { text, tokens: 1 } => self.tokens.push((at, text)),
                StreamEvent::PrefixCached { .. } => self.admitted = Some(at),
                StreamEvent::Done { .. } => return,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    fn text(&self) -> String {
        self.tokens.iter().map(|(_, t)| t.as_str()).collect()
    }
}

/// Chunked prefill: a long prompt that arrives while another request decodes is prefilled
/// `prefill_chunk` tokens a round, with one decode step of the running request between two
/// chunks; with 0 it is prefilled whole, and the running request waits through all of it.
/// Either way both requests generate the same greedy text.
#[test]
fn a_long_prompt_is_prefilled_in_chunks_between_the_decode_steps_of_others() {
    let tiny = tiny_llama::write_all();
    let request =
        |prompt: &str, prompt_tokens, max_output_tokens| sagellm_bench::GenerationRequest {
            prompt: prompt.into(),
            prompt_tokens,
            max_output_tokens,
            messages: Vec::new(),
            session_id: None,
        };
    let mut outputs = Vec::new();
    for prefill_chunk in [0, 16] {
        let config = CpuConfig {
            prefill_chunk,
            ..CpuConfig::default()
        };
        let backend = tiny_backend(&tiny.gguf_q8_0, config);
        assert_eq!(backend.settings()["prefill_chunk"], prefill_chunk);
        let mut short = Stamps::default();
        let mut short_stream = backend.generate(request("the queue block layer", 8, 400));
        short.read(&mut short_stream, 1);
        // Sent once the short request decodes: from then on every round has a decode step.
        let mut long = Stamps::default();
        let mut long_stream = backend.generate(request("server cache model tensor", 320, 4));
        long.read(&mut long_stream, usize::MAX);
        short.read(&mut short_stream, usize::MAX);
        assert_eq!((short.tokens.len(), long.tokens.len()), (400, 4));
        let (admitted, first) = (long.admitted.unwrap(), long.tokens[0].0);
        let between = short
            .tokens
            .iter()
            .filter(|(at, _)| (admitted..first).contains(at))
            .count();
        if prefill_chunk == 0 {
            assert_eq!(between, 0, "whole prefill: {between} tokens in between");
        } else {
            // 320 tokens in 20 chunks of 16: a decode step after each of the first 19.
            assert_eq!(between, 19, "chunks of 16: {between} tokens in between");
        }
        outputs.push((short.text(), long.text()));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "chunking changed what was generated"
    );
}

#[test]
fn a_shared_prefix_is_reused_and_a_small_budget_evicts() {
    let tiny = tiny_llama::write_all();
    let backend = tiny_backend(&tiny.gguf_q8_0, CpuConfig::default());
    let mut shared = workload("shared", 96, 4, 5, 1);
    shared.shared_prefix_tokens = 80;
    let with = run(backend.clone(), shared);
    let rate = with.workloads["shared"].prefix_hit_rate;
    assert!(
        rate > 0.5,
        "most of each prompt comes from the cache: {rate}"
    );
    let without = run(backend, workload("unshared", 96, 4, 5, 1));
    assert!(without.workloads["unshared"].prefix_hit_rate < rate / 2.0);

    let small = CpuConfig {
        kv_cache_tokens: 150,
        ..CpuConfig::default()
    };
    let backend = tiny_backend(&tiny.gguf_q8_0, small);
    let m = &run(backend, workload("evicting", 96, 4, 4, 1)).workloads["evicting"];
    assert!(m.evict_count > 0, "{m:?}");
    assert!(m.evict_ms >= 0.0);
}

#[test]
fn sampling_with_a_seed_is_reproducible_and_eos_can_stop() {
    let tiny = tiny_llama::write_all();
    let sampled = CpuConfig {
        temperature: 1.0,
        top_p: Some(0.9),
        seed: 7,
        ..CpuConfig::default()
    };
    let a = run(
        tiny_backend(&tiny.gguf_q8_0, sampled.clone()),
        workload("s", 16, 10, 2, 1),
    );
    let b = run(
        tiny_backend(&tiny.gguf_q8_0, sampled),
        workload("s", 16, 10, 2, 1),
    );
    assert_eq!(a.workloads["s"].total_output_tokens, 20);
    assert_eq!(
        a.workloads["s"].total_output_tokens,
        b.workloads["s"].total_output_tokens
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sagellm-benchmark"))
}

fn cpu_error(model: &str, envs: &[(&str, &str)]) -> String {
    let out_dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--backend", "cpu", "--model", model, "-o"])
        .arg(out_dir.path())
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{model} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_models_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let err = cpu_error(missing.to_str().unwrap(), &[]);
    assert!(err.contains("does not exist"), "{err}");

    let not_gguf = dir.path().join("weights.bin");
    std::fs::write(&not_gguf, b"not a model").unwrap();
    let err = cpu_error(not_gguf.to_str().unwrap(), &[]);
    assert!(err.contains("is not a GGUF file"), "{err}");

    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00\xff\xff").unwrap();
    let err = cpu_error(corrupt.to_str().unwrap(), &[]);
    assert!(err.contains("not a readable GGUF file"), "{err}");

    let bert = dir.path().join("bert");
    std::fs::create_dir(&bert).unwrap();
    std::fs::write(bert.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let tiny = tiny_llama::write_all();
    std::fs::copy(
        tiny.folder.join("tokenizer.json"),
        bert.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        tiny.folder.join("model.safetensors"),
        bert.join("model.safetensors"),
    )
    .unwrap();
    let err = cpu_error(bert.to_str().unwrap(), &[]);
    assert!(err.contains("unsupported architecture `bert`"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = cpu_error(empty.to_str().unwrap(), &[]);
    assert!(err.contains("no *.safetensors"), "{err}");
}

#[test]
fn an_unreachable_hub_says_to_pass_a_local_path() {
    let home = tempfile::tempdir().unwrap();
    // Port 9 (discard) on the loopback: nothing listens, the connection is refused at once.
    let err = cpu_error(
        "gpt2",
        &[
            ("HF_HOME", home.path().to_str().unwrap()),
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    assert!(err.contains("cannot fetch `gpt2`"), "{err}");
    assert!(err.contains("--model /path/to/gpt2"), "{err}");
    let err = cpu_error(
        "gpt2",
        &[
            ("HF_HOME", home.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn the_cli_runs_a_workload_on_the_tiny_model() {
    let tiny = tiny_llama::write_all();
    let out_dir = tempfile::tempdir().unwrap();
    let config = out_dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        "[cpu]\nkv_cache_tokens = 2048\n[workloads.short_input]\nprompt_tokens = 24\noutput_tokens = 6\nnum_requests = 2\n",
    )
    .unwrap();
    let results = out_dir.path().join("results");
    let out = bin()
        .args([
            "run",
            "--workload",
            "short",
            "--backend",
            "cpu",
            "--quiet",
            "--dtype",
            "q8_0",
            "--threads",
            "1",
        ])
        .arg("--model")
        .arg(&tiny.gguf_f32)
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("short_input_metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics["backend"], "cpu");
    assert_eq!(metrics["total_output_tokens"], 12);
    assert!(metrics["kv_used_tokens"].as_u64().unwrap() > 0);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(results.join("benchmark_summary.json")).unwrap(),
    )
    .unwrap();
    let settings = &summary["provenance"]["backend_settings"];
    assert_eq!(settings["architecture"], "llama", "{summary}");
    assert_eq!(settings["dtype"], "q8_0");

    let out = bin()
        .args([
            "run",
            "--backend",
            "cpu",
            "--model",
            "x.gguf",
            "--dtype",
            "q3",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --dtype `q3`"));
}

/// The terminal says once, when the model loads, which matrices fell back to which format.
#[test]
fn the_cli_says_once_what_fell_back() {
    let tiny = tiny_llama::write_all();
    let out_dir = tempfile::tempdir().unwrap();
    let config = out_dir.path().join("tiny.toml");
    std::fs::write(
        &config,
        "[workloads.short_input]\nprompt_tokens = 24\noutput_tokens = 4\nnum_requests = 2\n",
    )
    .unwrap();
    let out = bin()
        .args(["run", "--workload", "short", "--backend", "cpu", "--quiet"])
        .args(["--dtype", "q4k", "--threads", "1", "--model"])
        .arg(&tiny.gguf_f32)
        .arg("--config")
        .arg(&config)
        .arg("-o")
        .arg(out_dir.path().join("results"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("fell back").count(), 1, "{stderr}");
    assert!(
        stderr.contains("2 attn_q → q5_0 (64-value rows, 256-value q4k blocks)"),
        "{stderr}"
    );
}
