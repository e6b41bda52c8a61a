//! GPT-2 on candle-nn: learned positions, pre-LayerNorm blocks, fused QKV projection, tanh-GELU,
//! output tied to the token embedding. Weights as Hugging Face saves them (Conv1D: `[in, out]`).

use candle_core::{bail, Module, Result, Tensor};
use serde::Deserialize;

use super::attention::{causal_attention, last_position, merge_heads, split_heads};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::model::{check_positions, embed, CausalLm};
use super::weights::Weights;

/// `config.json` of a GPT-2 model (the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Gpt2Config {
    n_embd: usize,
    n_head: usize,
    n_layer: usize,
    n_positions: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_string()
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(weights: &mut Weights, name: &str, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: weights.f32(&format!("{name}.weight"))?,
            bias: weights.f32(&format!("{name}.bias"))?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

pub struct Gpt2 {
    config: Gpt2Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
}

impl Gpt2 {
    pub fn from_safetensors(config: &Gpt2Config, weights: &mut Weights) -> Result<Self> {
        if config.activation_function != "gelu_new"
            && config.activation_function != "gelu_pytorch_tanh"
        {
            bail!(
                "GPT-2 activation `{}` is not supported (only gelu_new)",
                config.activation_function
            );
        }
        if config.n_head == 0 || config.n_embd % config.n_head != 0 {
            bail!(
                "n_embd {} is not a multiple of n_head {}",
                config.n_embd,
                config.n_head
            );
        }
        // `GPT2LMHeadModel.save_pretrained` prefixes `transformer.`; the original checkpoints do not.
        let p = match weights.first_present(&["transformer.wte.weight", "wte.weight"]) {
            Some("transformer.wte.weight") => "transformer.",
            _ => "",
        };
        let eps = config.layer_norm_epsilon;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let b = format!("{p}h.{i}");
            let lin = |w: &mut Weights, s: &str| {
                w.linear(
                    &format!("{b}.{s}.weight"),
                    Some(&format!("{b}.{s}.bias")),
                    true,
                )
            };
            blocks.push(Block {
                ln_1: LayerNorm::load(weights, &format!("{b}.ln_1"), eps)?,
                c_attn: lin(weights, "attn.c_attn")?,
                attn_proj: lin(weights, "attn.c_proj")?,
                ln_2: LayerNorm::load(weights, &format!("{b}.ln_2"), eps)?,
                c_fc: lin(weights, "mlp.c_fc")?,
                mlp_proj: lin(weights, "mlp.c_proj")?,
            });
        }
        let wte_name = format!("{p}wte.weight");
        let wte = weights.f32(&wte_name)?;
        let wpe = weights.f32(&format!("{p}wpe.weight"))?;
        let ln_f = LayerNorm::load(weights, &format!("{p}ln_f"), eps)?;
        let head_name = if weights.contains("lm_head.weight") {
            "lm_head.weight".to_string()
        } else {
            wte_name
        };
        let lm_head = weights.output_head("lm_head", &head_name)?;
        Ok(Gpt2 {
            config: config.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }
}

impl CausalLm for Gpt2 {
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let c = &self.config;
        let past = cache.len();
        let new = tokens.len();
        check_positions(past, new, c.n_positions)?;
        let head_dim = c.n_embd / c.n_head;
        let positions = self.wpe.narrow(0, past, new)?.unsqueeze(0)?;
        let mut x = embed(&self.wte, tokens)?.broadcast_add(&positions)?;
        for (i, b) in self.blocks.iter().enumerate() {
            let qkv = b.c_attn.forward(&b.ln_1.forward(&x)?)?;
            let q = split_heads(&qkv.narrow(2, 0, c.n_embd)?, c.n_head)?;
            let k = split_heads(&qkv.narrow(2, c.n_embd, c.n_embd)?, c.n_head)?;
            let v = split_heads(&qkv.narrow(2, 2 * c.n_embd, c.n_embd)?, c.n_head)?;
            let (k, v) = cache.append(i, &k, &v)?;
            let a = causal_attention(&q, &k, &v, 1.0 / (head_dim as f64).sqrt())?;
            x = (x + b.attn_proj.forward(&merge_heads(&a)?)?)?;
            let m = b.c_fc.forward(&b.ln_2.forward(&x)?)?.gelu()?;
            x = (x + b.mlp_proj.forward(&m)?)?;
        }
        cache.commit(tokens);
        let last = self.ln_f.forward(&x.narrow(1, new - 1, 1)?)?;
        last_position(&self.lm_head.forward(&last)?)
    }

    fn num_layers(&self) -> usize {
        self.config.n_layer
    }

    fn max_positions(&self) -> usize {
        self.config.n_positions
    }

    fn weight_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                b.c_attn.weight_bytes()
                    + b.attn_proj.weight_bytes()
                    + b.c_fc.weight_bytes()
                    + b.mlp_proj.weight_bytes()
            })
            .sum();
        blocks + self.lm_head.weight_bytes()
    }

    fn architecture(&self) -> &'static str {
        "gpt2"
    }
}
