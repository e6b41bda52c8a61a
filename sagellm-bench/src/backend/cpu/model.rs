//! What every architecture offers the engine: a forward pass over new tokens with a cache.

use candle_core::{Result, Tensor};

use super::kv_cache::KvCache;

/// A decoder-only language model.
pub trait CausalLm: Send {
    /// Runs `tokens` (the positions after those already in `cache`), appends their keys and
    /// values to `cache`, and returns the logits of the last new position as `[vocab]`.
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor>;

    /// One decode step for several sequences: `tokens[i]` is the next token of the sequence
    /// whose cache is `caches[i]`. Appends each token's keys and values to its own cache and
    /// returns the logits as `[sequences, vocab]`, row `i` for sequence `i`.
    ///
    /// This default runs the sequences one after another; an architecture that can batch them
    /// (read each weight matrix once for all of them) overrides it.
    fn decode_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        check_batch(tokens, caches)?;
        let rows = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(&token, cache)| self.forward(&[token], cache))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }

    /// Transformer blocks, each with its own cache slot.
    fn num_layers(&self) -> usize;

    /// The longest sequence the position encoding covers.
    fn max_positions(&self) -> usize;

    /// Bytes of weight matrices read by one forward pass (the memory-bandwidth bound).
    fn weight_bytes(&self) -> usize;

    /// The architecture's name, e.g. `llama`.
    fn architecture(&self) -> &'static str;
}

/// Checks that `past + new` positions fit the model, with an error that says what to change.
pub fn check_positions(past: usize, new: usize, max: usize) -> Result<()> {
    if new == 0 {
        candle_core::bail!("a forward pass needs at least one token");
    }
    if past + new > max {
        candle_core::bail!(
            "the sequence would reach {} tokens, beyond the model's {max} positions; use shorter prompts or outputs",
            past + new
        );
    }
    Ok(())
}

/// Checks that a decode batch has one token per cache and at least one sequence.
pub fn check_batch(tokens: &[u32], caches: &[&mut KvCache]) -> Result<()> {
    if tokens.is_empty() || tokens.len() != caches.len() {
        candle_core::bail!(
            "a decode batch needs one token per sequence ({} tokens, {} caches)",
            tokens.len(),
            caches.len()
        );
    }
    Ok(())
}

/// Looks up the rows of `table` (`[vocab, width]`) for `tokens`, as `[1, n, width]`.
pub fn embed(table: &Tensor, tokens: &[u32]) -> Result<Tensor> {
    let vocab = table.dim(0)?;
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
    }
    let ids = Tensor::new(tokens, table.device())?;
    table.index_select(&ids, 0)?.unsqueeze(0)
}
