//! Causal self-attention over a sequence's cache, shared by every architecture here.

use candle_core::{DType, Device, Result, Tensor};

use super::kv_cache::KvCache;

/// Attends the new positions' queries `q` (`[1, heads, new, head_dim]`) to all cached keys and
/// values (`[1, kv_heads, past + new, head_dim]`; grouped-query heads share them). `scale`
/// multiplies the scores (1 when the queries are already scaled).
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, heads, new, head_dim) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    let total = k.dim(2)?;
    let group = heads / kv_heads;
    // Query heads `j * group .. (j + 1) * group` share key/value head `j`: stacking their rows
    // under that head lets one product per key/value head serve them all, instead of copying
    // every cached key and value once per query head. Row `g * new + i` is query `i` of head
    // `j * group + g`.
    let q = q
        .contiguous()?
        .reshape((b, kv_heads, group * new, head_dim))?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = if new > 1 {
        scores.broadcast_add(&causal_mask(new, total - new, group, q.device())?)?
    } else {
        // One new position sees every cached one: no mask.
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    // `k` and `v` may be views of a cache's buffers (`[1, kv_heads, positions, head_dim]` out
    // of a longer buffer): the products read them in place.
    probs.matmul(v)?.reshape((b, heads, new, head_dim))
}

/// Attention of one decode step for a batch of sequences: row `i` of `q` (`[batch, heads, 1,
/// head_dim]`) and of the new keys and values `k`, `v` (`[batch, kv_heads, 1, head_dim]`)
/// belongs to the sequence whose cache is `caches[i]`. Each row's key and value are appended to
/// its own cache's `layer`, and each query attends to its own cache alone: the sequences have
/// different lengths, so this part cannot be one product. Returns `[batch, heads, 1, head_dim]`.
pub fn decode_batch_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    caches: &mut [&mut KvCache],
    layer: usize,
    scale: f64,
) -> Result<Tensor> {
    let rows = caches
        .iter_mut()
        .enumerate()
        .map(|(i, cache)| {
            let (keys, values) = cache.append(layer, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?)?;
            causal_attention(&q.narrow(0, i, 1)?, &keys, &values, scale)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)
}

/// `[group * new, past + new]`: row `g * new + i` holds query `i` (at position `past + i`) of
/// the group's `g`-th head; 0 where it may see key `j`, -inf after.
fn causal_mask(new: usize, past: usize, group: usize, device: &Device) -> Result<Tensor> {
    let total = past + new;
    let mask: Vec<f32> = (0..group * new)
        .flat_map(|row| {
            let i = row % new;
            (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(mask, (group * new, total), device)
}

/// Splits `[1, new, heads * head_dim]` into `[1, heads, new, head_dim]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, width) = x.dims3()?;
    x.reshape((b, t, heads, width / heads))?.transpose(1, 2)
}

/// Splits a decode batch's `[1, batch, heads * head_dim]` (the sequences side by side, as a
/// prompt's positions would be) into `[batch, heads, 1, head_dim]`, one sequence per row.
pub fn split_batch_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (_, batch, width) = x.dims3()?;
    x.reshape((batch, 1, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Joins `[batch, heads, 1, head_dim]` back into `[1, batch, heads * head_dim]`.
pub fn merge_batch_heads(x: &Tensor) -> Result<Tensor> {
    let (batch, h, _, d) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((1, batch, h * d))
}

/// Joins `[1, heads, new, head_dim]` back into `[1, new, heads * head_dim]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * d))
}

/// The last position's row of `[1, new, vocab]` logits, as `[vocab]`.
pub fn last_position(logits: &Tensor) -> Result<Tensor> {
    let t = logits.dim(1)?;
    logits
        .narrow(1, t - 1, 1)?
        .squeeze(1)?
        .squeeze(0)?
        .to_dtype(DType::F32)
}
