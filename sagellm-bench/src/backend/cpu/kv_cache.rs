//! One sequence's attention keys and values, layer by layer, as real tensors.

use candle_core::{Result, Tensor};

/// Keys and values of every position a sequence has processed: per layer, `[1, kv_heads,
/// positions, head_dim]` tensors. Its size is what `kv_used_tokens` and `kv_used_bytes` count.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The token ids whose keys and values are held, in order.
    tokens: Vec<u32>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            tokens: Vec::new(),
        }
    }

    /// Positions held (the next token's position).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Bytes of the key and value tensors.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Appends the new positions' keys and values of `layer` and returns all of them.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let joined = match &self.layers[layer] {
            None => (k.contiguous()?, v.contiguous()?),
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
        };
        self.layers[layer] = Some(joined.clone());
        Ok(joined)
    }

    /// Records that `tokens` were appended by the forward pass that just ran on every layer.
    pub fn commit(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }

    /// A copy holding only the first `n` positions (shares nothing that later appends change).
    pub fn prefix(&self, n: usize) -> Result<KvCache> {
        let n = n.min(self.len());
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) if n > 0 => Ok(Some((
                    k.narrow(2, 0, n)?.contiguous()?,
                    v.narrow(2, 0, n)?.contiguous()?,
                ))),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            tokens: self.tokens[..n].to_vec(),
        })
    }

    /// How many leading tokens of `prompt` this cache holds.
    pub fn common_prefix(&self, prompt: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }
}
