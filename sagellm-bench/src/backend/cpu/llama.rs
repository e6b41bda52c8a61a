//! The llama family (Llama, SmolLM, TinyLlama, Mistral-style GQA): RMSNorm, rotary positions,
//! grouped-query attention, SwiGLU. Loads from GGUF (`blk.N.*` names, rotary pairs interleaved
//! by the converter) and from Hugging Face safetensors (`model.layers.N.*`, halves rotated).

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use serde::Deserialize;

use super::attention::{
    causal_attention, decode_batch_attention, last_position, merge_batch_heads, merge_heads,
    split_batch_heads, split_heads,
};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::model::{check_batch, check_positions, embed, CausalLm};
use super::weights::{meta_f32_or, meta_usize, Weights};

/// Positions beyond this are not precomputed, whatever the model claims (bounds the tables).
const MAX_ROTARY_POSITIONS: usize = 8192;

/// The shape of a llama model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub max_positions: usize,
}

/// `config.json` of a Hugging Face llama model (the fields used here).
#[derive(Debug, Deserialize)]
pub struct HfLlamaConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    2048
}

struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

pub struct Llama {
    config: LlamaConfig,
    embedding: Tensor,
    blocks: Vec<Block>,
    final_norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// GGUF files store q/k rows permuted so rotary pairs are adjacent; safetensors keep halves.
    interleaved_rotary: bool,
}

impl Llama {
    /// Loads from a GGUF file whose `general.architecture` is `llama`.
    pub fn from_gguf(weights: &mut Weights) -> Result<Self> {
        let meta = match weights.metadata() {
            Some(m) => m,
            None => bail!("not a GGUF file"),
        };
        let head_count = meta_usize(meta, "llama.attention.head_count")?;
        let config = LlamaConfig {
            hidden: meta_usize(meta, "llama.embedding_length")?,
            heads: head_count,
            kv_heads: meta_usize(meta, "llama.attention.head_count_kv").unwrap_or(head_count),
            layers: meta_usize(meta, "llama.block_count")?,
            rms_eps: meta_f32_or(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_theta: meta_f32_or(meta, "llama.rope.freq_base", 10_000.0)?,
            max_positions: meta_usize(meta, "llama.context_length").unwrap_or(2048),
        };
        if meta.contains_key("llama.rope.scaling.type")
            || meta.contains_key("llama.rope.scaling.factor")
        {
            bail!("rope scaling (llama.rope.scaling.*) is not supported by the cpu backend");
        }
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: weights.f32(&p("attn_norm"))?,
                q: weights.linear(&p("attn_q"), None, false)?,
                k: weights.linear(&p("attn_k"), None, false)?,
                v: weights.linear(&p("attn_v"), None, false)?,
                o: weights.linear(&p("attn_output"), None, false)?,
                ffn_norm: weights.f32(&p("ffn_norm"))?,
                gate: weights.linear(&p("ffn_gate"), None, false)?,
                up: weights.linear(&p("ffn_up"), None, false)?,
                down: weights.linear(&p("ffn_down"), None, false)?,
            });
        }
        let embedding = weights.f32("token_embd.weight")?;
        let head_name = weights
            .first_present(&["output.weight", "token_embd.weight"])
            .unwrap_or("output.weight");
        let lm_head = weights.output_head("output", head_name)?;
        let final_norm = weights.f32("output_norm.weight")?;
        Self::assemble(config, embedding, blocks, final_norm, lm_head, true)
    }

    /// Loads from Hugging Face safetensors with `config.json`.
    pub fn from_safetensors(hf: &HfLlamaConfig, weights: &mut Weights) -> Result<Self> {
        if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            bail!("rope_scaling in config.json is not supported by the cpu backend");
        }
        let config = LlamaConfig {
            hidden: hf.hidden_size,
            heads: hf.num_attention_heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            layers: hf.num_hidden_layers,
            rms_eps: hf.rms_norm_eps as f32,
            rope_theta: hf.rope_theta as f32,
            max_positions: hf.max_position_embeddings,
        };
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            blocks.push(Block {
                attn_norm: weights.f32(&p("input_layernorm"))?,
                q: weights.linear(&p("self_attn.q_proj"), None, false)?,
                k: weights.linear(&p("self_attn.k_proj"), None, false)?,
                v: weights.linear(&p("self_attn.v_proj"), None, false)?,
                o: weights.linear(&p("self_attn.o_proj"), None, false)?,
                ffn_norm: weights.f32(&p("post_attention_layernorm"))?,
                gate: weights.linear(&p("mlp.gate_proj"), None, false)?,
                up: weights.linear(&p("mlp.up_proj"), None, false)?,
                down: weights.linear(&p("mlp.down_proj"), None, false)?,
            });
        }
        let embedding = weights.f32("model.embed_tokens.weight")?;
        let head_name = if hf.tie_word_embeddings || !weights.contains("lm_head.weight") {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let lm_head = weights.output_head("lm_head", head_name)?;
        let final_norm = weights.f32("model.norm.weight")?;
        Self::assemble(config, embedding, blocks, final_norm, lm_head, false)
    }

    fn assemble(
        config: LlamaConfig,
        embedding: Tensor,
        blocks: Vec<Block>,
        final_norm: Tensor,
        lm_head: Linear,
        interleaved_rotary: bool,
    ) -> Result<Self> {
        if config.heads == 0 || config.kv_heads == 0 || config.hidden % config.heads != 0 {
            bail!(
                "inconsistent shape: hidden size {} over {} heads",
                config.hidden,
                config.heads
            );
        }
        if config.heads % config.kv_heads != 0 {
            bail!(
                "{} attention heads cannot share {} key/value heads evenly",
                config.heads,
                config.kv_heads
            );
        }
        let head_dim = config.hidden / config.heads;
        let positions = config.max_positions.min(MAX_ROTARY_POSITIONS);
        let (cos, sin) = rotary_tables(head_dim, positions, config.rope_theta)?;
        Ok(Llama {
            config: LlamaConfig {
                max_positions: positions,
                ..config
            },
            embedding,
            blocks,
            final_norm,
            lm_head,
            cos,
            sin,
            interleaved_rotary,
        })
    }

    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.interleaved_rotary {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }
}

/// cos and sin of `position × θ^(-2i/d)`, `[positions, head_dim / 2]`.
fn rotary_tables(head_dim: usize, positions: usize, theta: f32) -> Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let angles = pos.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// The forward passes, run inside candle's thread pool (`Device::with_context`): candle-nn's
/// norms, rotary positions and softmax split their rows over the current rayon pool, and
/// called from outside a pool each of them handed its rows to a pool thread and slept until it
/// was done, even with one thread (about 150 hand-offs a decode step, 1 or 2 ms of it); inside,
/// the calling thread is the pool's and runs them itself.
impl CausalLm for Llama {
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        Device::Cpu.with_context(|| self.forward_in_pool(tokens, cache))
    }

    fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        Device::Cpu.with_context(|| self.decode_batch_in_pool(tokens, caches))
    }

    fn num_layers(&self) -> usize {
        self.config.layers
    }

    fn max_positions(&self) -> usize {
        self.config.max_positions
    }

    fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]
                    .iter()
                    .map(|l| l.weight_bytes())
                    .sum::<usize>()
            })
            .sum();
        blocks + self.lm_head.weight_bytes()
    }

    fn architecture(&self) -> &'static str {
        "llama"
    }
}

impl Llama {
    fn forward_in_pool(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let past = cache.len();
        let new = tokens.len();
        check_positions(past, new, c.max_positions)?;
        let head_dim = c.hidden / c.heads;
        let cos = self.cos.narrow(0, past, new)?;
        let sin = self.sin.narrow(0, past, new)?;
        let mut x = embed(&self.embedding, tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, c.rms_eps)?;
            let [q, k, v] = Linear::forward_all([&b.q, &b.k, &b.v], &h)?;
            let q = split_heads(&q, c.heads)?.contiguous()?;
            let k = split_heads(&k, c.kv_heads)?.contiguous()?;
            let v = split_heads(&v, c.kv_heads)?;
            let q = self.rotate(&q, &cos, &sin)?;
            let k = self.rotate(&k, &cos, &sin)?;
            let (k, v) = cache.append(i, &k, &v)?;
            let a = causal_attention(&q, &k, &v, 1.0 / (head_dim as f64).sqrt())?;
            x = (x + b.o.forward(&merge_heads(&a)?)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, c.rms_eps)?;
            let [gate, up] = Linear::forward_all([&b.gate, &b.up], &h)?;
            let gated = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + b.down.forward(&gated)?)?;
        }
        cache.commit(tokens);
        let last = x.narrow(1, new - 1, 1)?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.final_norm, c.rms_eps)?;
        last_position(&self.lm_head.forward(&last)?)
    }

    /// The batch's tokens stand side by side as `[1, batch, hidden]`, where a prompt's positions
    /// would, so the norms and every weight matrix (q, k, v, o, the MLP, the output head) run
    /// once for the whole batch; only rotary positions and attention are per sequence.
    fn decode_batch_in_pool(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        check_batch(tokens, caches)?;
        let c = &self.config;
        for cache in caches.iter() {
            check_positions(cache.len(), 1, c.max_positions)?;
        }
        let head_dim = c.hidden / c.heads;
        let positions: Vec<u32> = caches.iter().map(|cache| cache.len() as u32).collect();
        let positions = Tensor::new(positions, &Device::Cpu)?;
        // `[batch, 1, head_dim / 2]`: each sequence rotated at its own position.
        let cos = self.cos.index_select(&positions, 0)?.unsqueeze(1)?;
        let sin = self.sin.index_select(&positions, 0)?.unsqueeze(1)?;
        let mut x = embed(&self.embedding, tokens)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &b.attn_norm, c.rms_eps)?;
            let [q, k, v] = Linear::forward_decode_all([&b.q, &b.k, &b.v], &h)?;
            let q = split_batch_heads(&q, c.heads)?;
            let k = split_batch_heads(&k, c.kv_heads)?;
            let v = split_batch_heads(&v, c.kv_heads)?;
            let q = self.rotate(&q, &cos, &sin)?;
            let k = self.rotate(&k, &cos, &sin)?;
            let a = decode_batch_attention(&q, &k, &v, caches, i, 1.0 / (head_dim as f64).sqrt())?;
            x = (x + b.o.forward_decode(&merge_batch_heads(&a)?)?)?;
            let h = candle_nn::ops::rms_norm(&x, &b.ffn_norm, c.rms_eps)?;
            let [gate, up] = Linear::forward_decode_all([&b.gate, &b.up], &h)?;
            let gated = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + b.down.forward_decode(&gated)?)?;
        }
        for (cache, &token) in caches.iter_mut().zip(tokens) {
            cache.commit(&[token]);
        }
        let x = candle_nn::ops::rms_norm(&x, &self.final_norm, c.rms_eps)?;
        self.lm_head
            .forward_decode(&x)?
            .squeeze(0)?
            .to_dtype(DType::F32)
    }
}
