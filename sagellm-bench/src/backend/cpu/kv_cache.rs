//! One sequence's attention keys and values, layer by layer, as real tensors.

use candle_core::{Result, Tensor};

/// Keys and values of every position a sequence has processed: per layer, `[1, kv_heads,
/// capacity, head_dim]` buffers whose first positions are held. Their held positions are what
/// `kv_used_tokens` and `kv_used_bytes` count.
///
/// A decode step writes its one new position into the buffer in place and attends over a view
/// of the held positions. Concatenating instead (`Tensor::cat` of the old cache and the new
/// position) copied every layer's whole cache once per token, a cost that grows with the
/// sequence (at 1,000 positions, 46 MB a token on SmolLM2) and allocated fresh pages each time.
/// A full buffer is copied once into one of twice the capacity, so appends stay amortised
/// constant. Not `Clone`: two caches sharing a buffer would write each other's positions.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<LayerKv>>,
    /// The token ids whose keys and values are held, in order.
    tokens: Vec<u32>,
}

/// One layer's key and value buffers, `[1, kv_heads, capacity, head_dim]`, of which the first
/// `len` positions are held.
#[derive(Debug)]
struct LayerKv {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

/// Positions a layer's buffer holds at first (grown by doubling after).
const FIRST_CAPACITY: usize = 64;

impl LayerKv {
    fn held(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.keys.narrow(2, 0, self.len)?,
            self.values.narrow(2, 0, self.len)?,
        ))
    }

    fn capacity(&self) -> usize {
        self.keys.dim(2).unwrap_or(0)
    }

    /// Buffers of `capacity` positions holding `keys` and `values` (`[1, kv_heads, n,
    /// head_dim]`, `n <= capacity`) first.
    fn with_capacity(keys: &Tensor, values: &Tensor, capacity: usize) -> Result<Self> {
        let (b, heads, n, dim) = keys.dims4()?;
        let buffer = |held: &Tensor| -> Result<Tensor> {
            let t = Tensor::zeros((b, heads, capacity, dim), held.dtype(), held.device())?;
            t.slice_set(&held.contiguous()?, 2, 0)?;
            Ok(t)
        };
        Ok(LayerKv {
            keys: buffer(keys)?,
            values: buffer(values)?,
            len: n,
        })
    }
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
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

    /// Bytes of the held positions' keys and values (the buffers' unused capacity, at most as
    /// much again, is not counted).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| {
                let per_position = l.keys.elem_count() / l.capacity().max(1);
                2 * l.len * per_position * l.keys.dtype().size_in_bytes()
            })
            .sum()
    }

    /// Appends the new positions' keys and values of `layer` (`[1, kv_heads, new, head_dim]`)
    /// and returns all held positions' keys and values (views of the buffers).
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new = k.dim(2)?;
        let slot = &mut self.layers[layer];
        match slot {
            None => {
                *slot = Some(LayerKv::with_capacity(k, v, new.max(FIRST_CAPACITY))?);
            }
            Some(l) if l.len + new > l.capacity() => {
                let (keys, values) = l.held()?;
                let capacity = (2 * l.capacity()).max(l.len + new);
                let mut grown = LayerKv::with_capacity(&keys, &values, capacity)?;
                grown.keys.slice_set(&k.contiguous()?, 2, grown.len)?;
                grown.values.slice_set(&v.contiguous()?, 2, grown.len)?;
                grown.len += new;
                *slot = Some(grown);
            }
            Some(l) => {
                l.keys.slice_set(&k.contiguous()?, 2, l.len)?;
                l.values.slice_set(&v.contiguous()?, 2, l.len)?;
                l.len += new;
            }
        }
        match slot {
            Some(l) => l.held(),
            None => unreachable!("filled above"),
        }
    }

    /// Records that `tokens` were appended by the forward pass that just ran on every layer.
    pub fn commit(&mut self, tokens: &[u32]) {
        self.tokens.extend_from_slice(tokens);
    }

    /// A copy holding only the first `n` positions (shares no buffer with this cache).
    pub fn prefix(&self, n: usize) -> Result<KvCache> {
        let n = n.min(self.len());
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some(l) if n > 0 => {
                    let (keys, values) = (l.keys.narrow(2, 0, n)?, l.values.narrow(2, 0, n)?);
                    Ok(Some(LayerKv::with_capacity(
                        &keys,
                        &values,
                        n.max(FIRST_CAPACITY),
                    )?))
                }
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// `[1, heads, n, dim]` with values that name their position: `first + p` at position `p`.
    fn positions(heads: usize, n: usize, dim: usize, first: usize) -> Tensor {
        let values: Vec<f32> = (0..heads * n * dim)
            .map(|i| (first + i / dim % n) as f32 + (i / (n * dim)) as f32 * 1000.0)
            .collect();
        Tensor::from_vec(values, (1, heads, n, dim), &Device::Cpu).unwrap()
    }

    #[test]
    fn appends_past_the_first_capacity_hold_every_position_in_order() {
        let (heads, dim) = (3, 4);
        let mut cache = KvCache::new(1);
        // A 50-position prompt, then 100 single positions: two growths of the buffer.
        let mut expected = vec![positions(heads, 50, dim, 0)];
        cache.append(0, &expected[0], &expected[0]).unwrap();
        for p in 50..150 {
            let one = positions(heads, 1, dim, p);
            let (k, v) = cache.append(0, &one, &one).unwrap();
            expected.push(one);
            let all = Tensor::cat(&expected, 2).unwrap();
            assert_eq!(k.dims(), [1, heads, p + 1, dim]);
            for t in [&k, &v] {
                assert_eq!(
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    all.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
            }
        }
        cache.commit(&[0; 150]);
        // The held positions, not the buffer's capacity (256 after two doublings from 64).
        assert_eq!(cache.bytes(), 2 * 150 * heads * dim * 4);
    }

    #[test]
    fn a_prefix_copy_is_not_changed_by_appends_to_the_original() {
        let (heads, dim) = (2, 4);
        let mut cache = KvCache::new(1);
        cache
            .append(
                0,
                &positions(heads, 10, dim, 0),
                &positions(heads, 10, dim, 0),
            )
            .unwrap();
        cache.commit(&[7; 10]);
        let mut copy = cache.prefix(6).unwrap();
        // The original writes position 10, the copy position 6, each into its own buffer.
        cache
            .append(
                0,
                &positions(heads, 1, dim, 500),
                &positions(heads, 1, dim, 500),
            )
            .unwrap();
        let (k, _) = copy
            .append(
                0,
                &positions(heads, 1, dim, 900),
                &positions(heads, 1, dim, 900),
            )
            .unwrap();
        let mut expected = positions(heads, 6, dim, 0);
        expected = Tensor::cat(&[&expected, &positions(heads, 1, dim, 900)], 2).unwrap();
        assert_eq!(
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let (k, _) = cache
            .append(
                0,
                &positions(heads, 1, dim, 600),
                &positions(heads, 1, dim, 600),
            )
            .unwrap();
        let k = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Position 6 of the original is still its own (6), position 10 the 500 written above.
        assert_eq!(k[6 * dim], 6.0);
        assert_eq!(k[10 * dim], 500.0);
    }
}
