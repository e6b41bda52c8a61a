//! OPT on candle-nn: learned positions offset by 2, pre-LayerNorm blocks (the 125m, 1.3b and
//! larger checkpoints), ReLU MLP, queries scaled before the product, output tied to the
//! token embedding.

use candle_core::{bail, Module, Result, Tensor};
use serde::Deserialize;

use super::attention::{causal_attention, last_position, merge_heads, split_heads};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::model::{check_positions, embed, CausalLm};
use super::weights::Weights;

/// OPT's position table starts with two rows it never uses for real positions.
const POSITION_OFFSET: usize = 2;

/// `config.json` of an OPT model (the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    max_position_embeddings: usize,
    #[serde(default = "yes")]
    do_layer_norm_before: bool,
    word_embed_proj_dim: Option<usize>,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "yes")]
    enable_bias: bool,
}

fn yes() -> bool {
    true
}

fn default_activation() -> String {
    "relu".to_string()
}

/// OPT's LayerNorm epsilon (fixed in the reference implementation).
const LAYER_NORM_EPS: f32 = 1e-5;

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(weights: &mut Weights, name: &str) -> Result<Self> {
        Ok(LayerNorm {
            weight: weights.f32(&format!("{name}.weight"))?,
            bias: weights.f32(&format!("{name}.bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, LAYER_NORM_EPS)
    }
}

struct Block {
    attn_norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    mlp_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

pub struct Opt {
    config: OptConfig,
    embed_tokens: Tensor,
    embed_positions: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    lm_head: Linear,
}

impl Opt {
    pub fn from_safetensors(config: &OptConfig, weights: &mut Weights) -> Result<Self> {
        if !config.do_layer_norm_before {
            bail!("OPT with do_layer_norm_before = false (opt-350m) is not supported; use opt-125m or opt-1.3b and larger");
        }
        if config
            .word_embed_proj_dim
            .is_some_and(|d| d != config.hidden_size)
        {
            bail!("OPT with word_embed_proj_dim != hidden_size (projected embeddings) is not supported");
        }
        if config.activation_function != "relu" {
            bail!(
                "OPT activation `{}` is not supported (only relu)",
                config.activation_function
            );
        }
        if !config.enable_bias {
            bail!("OPT without biases (enable_bias = false) is not supported");
        }
        if config.num_attention_heads == 0 || config.hidden_size % config.num_attention_heads != 0 {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        // `OPTForCausalLM` saves `model.decoder.*`; the original release used `decoder.*`.
        let p = match weights.first_present(&[
            "model.decoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
        ]) {
            Some("decoder.embed_tokens.weight") => "decoder.",
            _ => "model.decoder.",
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let b = format!("{p}layers.{i}");
            let lin = |w: &mut Weights, s: &str| {
                w.linear(
                    &format!("{b}.{s}.weight"),
                    Some(&format!("{b}.{s}.bias")),
                    false,
                )
            };
            blocks.push(Block {
                attn_norm: LayerNorm::load(weights, &format!("{b}.self_attn_layer_norm"))?,
                q: lin(weights, "self_attn.q_proj")?,
                k: lin(weights, "self_attn.k_proj")?,
                v: lin(weights, "self_attn.v_proj")?,
                out: lin(weights, "self_attn.out_proj")?,
                mlp_norm: LayerNorm::load(weights, &format!("{b}.final_layer_norm"))?,
                fc1: lin(weights, "fc1")?,
                fc2: lin(weights, "fc2")?,
            });
        }
        let embed_name = format!("{p}embed_tokens.weight");
        let embed_tokens = weights.f32(&embed_name)?;
        let embed_positions = weights.f32(&format!("{p}embed_positions.weight"))?;
        let final_norm = LayerNorm::load(weights, &format!("{p}final_layer_norm"))?;
        let head_name = if weights.contains("lm_head.weight") {
            "lm_head.weight".to_string()
        } else {
            embed_name
        };
        let lm_head = weights.output_head("lm_head", &head_name)?;
        Ok(Opt {
            config: config.clone(),
            embed_tokens,
            embed_positions,
            blocks,
            final_norm,
            lm_head,
        })
    }
}

impl CausalLm for Opt {
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let past = cache.len();
        let new = tokens.len();
        check_positions(past, new, c.max_position_embeddings)?;
        let heads = c.num_attention_heads;
        let head_dim = c.hidden_size / heads;
        let positions = self
            .embed_positions
            .narrow(0, past + POSITION_OFFSET, new)?
            .unsqueeze(0)?;
        let mut x = embed(&self.embed_tokens, tokens)?.broadcast_add(&positions)?;
        let scaling = 1.0 / (head_dim as f64).sqrt();
        for (i, b) in self.blocks.iter().enumerate() {
            let h = b.attn_norm.forward(&x)?;
            // OPT scales the projected queries, not the scores: the same product in exact
            // arithmetic, kept in this order to follow the reference's rounding.
            let q = split_heads(&(b.q.forward(&h)? * scaling)?, heads)?;
            let k = split_heads(&b.k.forward(&h)?, heads)?;
            let v = split_heads(&b.v.forward(&h)?, heads)?;
            let (k, v) = cache.append(i, &k, &v)?;
            let a = causal_attention(&q, &k, &v, 1.0)?;
            x = (x + b.out.forward(&merge_heads(&a)?)?)?;
            let m = b.fc1.forward(&b.mlp_norm.forward(&x)?)?.relu()?;
            x = (x + b.fc2.forward(&m)?)?;
        }
        cache.commit(tokens);
        let last = self.final_norm.forward(&x.narrow(1, new - 1, 1)?)?;
        last_position(&self.lm_head.forward(&last)?)
    }

    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn max_positions(&self) -> usize {
        // The table has POSITION_OFFSET unused rows before position 0.
        self.config.max_position_embeddings
    }

    fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [&b.q, &b.k, &b.v, &b.out, &b.fc1, &b.fc2]
                    .iter()
                    .map(|l| l.weight_bytes())
                    .sum::<usize>()
            })
            .sum();
        blocks + self.lm_head.weight_bytes()
    }

    fn architecture(&self) -> &'static str {
        "opt"
    }
}
