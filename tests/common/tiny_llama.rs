//! A tiny llama with random weights, written by the tests themselves in the two formats the cpu
//! backend loads: a GGUF file (weights and a byte-level BPE tokenizer in its metadata) and a
//! Hugging Face folder (config.json, model.safetensors, tokenizer.json).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const LAYERS: usize = 2;
pub const FFN: usize = 128;
pub const CONTEXT: usize = 1024;

/// GPT-2's byte-to-character table: every byte has a printable stand-in.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut out = vec!['\0'; 256];
    for &b in &printable {
        out[b as usize] = char::from_u32(b).unwrap();
    }
    let mut extra = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            out[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
            printable.push(b);
        }
    }
    out
}

/// The vocabulary: 256 byte tokens, three merges, and an end-of-text token.
fn vocabulary() -> (Vec<String>, Vec<String>, Vec<u32>) {
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let merges = vec!["Ġ t".to_string(), "h e".to_string(), "Ġt he".to_string()];
    tokens.extend(["Ġt", "he", "Ġthe", "<|endoftext|>"].map(String::from));
    let mut types = vec![1u32; tokens.len()];
    *types.last_mut().unwrap() = 3; // control
    (tokens, merges, types)
}

pub fn vocab_size() -> usize {
    vocabulary().0.len()
}

/// Deterministic pseudo-random weights (xorshift), scaled to keep activations moderate.
struct Rng(u64);

impl Rng {
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }
}

/// The weights under their Hugging Face names.
fn hf_weights() -> Vec<(String, Tensor)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let head_dim = HIDDEN / HEADS;
    let vocab = vocab_size();
    let mut w = vec![(
        "model.embed_tokens.weight".to_string(),
        rng.tensor(&[vocab, HIDDEN], 1.0),
    )];
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        let norm = |rng: &mut Rng| (rng.tensor(&[HIDDEN], 0.2) + 1.0).unwrap();
        w.push((format!("{p}.input_layernorm.weight"), norm(&mut rng)));
        w.push((
            format!("{p}.self_attn.q_proj.weight"),
            rng.tensor(&[HIDDEN, HIDDEN], 0.3),
        ));
        w.push((
            format!("{p}.self_attn.k_proj.weight"),
            rng.tensor(&[KV_HEADS * head_dim, HIDDEN], 0.3),
        ));
        w.push((
            format!("{p}.self_attn.v_proj.weight"),
            rng.tensor(&[KV_HEADS * head_dim, HIDDEN], 0.3),
        ));
        w.push((
            format!("{p}.self_attn.o_proj.weight"),
            rng.tensor(&[HIDDEN, HIDDEN], 0.2),
        ));
        w.push((
            format!("{p}.post_attention_layernorm.weight"),
            norm(&mut rng),
        ));
        w.push((
            format!("{p}.mlp.gate_proj.weight"),
            rng.tensor(&[FFN, HIDDEN], 0.2),
        ));
        w.push((
            format!("{p}.mlp.up_proj.weight"),
            rng.tensor(&[FFN, HIDDEN], 0.2),
        ));
        w.push((
            format!("{p}.mlp.down_proj.weight"),
            rng.tensor(&[HIDDEN, FFN], 0.2),
        ));
    }
    w.push((
        "model.norm.weight".to_string(),
        (rng.tensor(&[HIDDEN], 0.2) + 1.0).unwrap(),
    ));
    w.push((
        "lm_head.weight".to_string(),
        rng.tensor(&[vocab, HIDDEN], 0.5),
    ));
    w
}

/// llama.cpp's converter reorders q/k rows so that rotary pairs are adjacent.
fn permute_for_gguf(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, name) = rest.split_once('.').unwrap();
    let short = match name {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        other => panic!("unmapped {other}"),
    };
    format!("blk.{layer}.{short}.weight")
}

fn gguf_metadata() -> Vec<(String, Value)> {
    let (tokens, merges, types) = vocabulary();
    let eot = (tokens.len() - 1) as u32;
    vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.context_length".into(), Value::U32(CONTEXT as u32)),
        ("llama.embedding_length".into(), Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length".into(), Value::U32(FFN as u32)),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(|t| Value::I32(t as i32)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(eot)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eot)),
    ]
}

/// Writes the tiny llama as a GGUF file with matrices in `format` (norms stay f32).
pub fn write_gguf(path: &Path, format: GgmlDType) {
    let mut tensors = Vec::new();
    for (name, t) in hf_weights() {
        let t = if name.ends_with("q_proj.weight") {
            permute_for_gguf(&t, HEADS)
        } else if name.ends_with("k_proj.weight") {
            permute_for_gguf(&t, KV_HEADS)
        } else {
            t
        };
        let q = if t.rank() == 2 {
            format
        } else {
            GgmlDType::F32
        };
        tensors.push((gguf_name(&name), QTensor::quantize(&t, q).unwrap()));
    }
    let metadata = gguf_metadata();
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    candle_core::quantized::gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

/// Writes the tiny llama as a Hugging Face folder; the tokenizer.json is the GGUF's tokenizer.
pub fn write_folder(dir: &Path, gguf: &Path) {
    use candle_core::quantized::tokenizer::TokenizerFromGguf;
    std::fs::create_dir_all(dir).unwrap();
    let weights: HashMap<String, Tensor> = hf_weights().into_iter().collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": CONTEXT,
        "vocab_size": vocab_size(),
        "tie_word_embeddings": false,
        "eos_token_id": vocab_size() - 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut file = std::fs::File::open(gguf).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut tokenizer = Tokenizer::from_gguf(&content).unwrap();
    // As the tokenizer.json of a byte-level BPE model ships it: no space added before the text.
    tokenizer.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
    ));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

/// The tiny llama in every format, in a temporary folder.
pub struct TinyLlama {
    pub _dir: tempfile::TempDir,
    pub gguf_f32: PathBuf,
    pub gguf_q8_0: PathBuf,
    pub gguf_q4_1: PathBuf,
    pub folder: PathBuf,
}

pub fn write_all() -> TinyLlama {
    let dir = tempfile::tempdir().unwrap();
    let gguf_f32 = dir.path().join("tiny-f32.gguf");
    let gguf_q8_0 = dir.path().join("tiny-q8_0.gguf");
    let gguf_q4_1 = dir.path().join("tiny-q4_1.gguf");
    write_gguf(&gguf_f32, GgmlDType::F32);
    write_gguf(&gguf_q8_0, GgmlDType::Q8_0);
    write_gguf(&gguf_q4_1, GgmlDType::Q4_1);
    let folder = dir.path().join("tiny-llama");
    write_folder(&folder, &gguf_f32);
    TinyLlama {
        _dir: dir,
        gguf_f32,
        gguf_q8_0,
        gguf_q4_1,
        folder,
    }
}
