//! Q8_0 weights multiplied by our own AVX2 kernel, for decode.
//!
//! candle 0.11 multiplies a Q8_0 matrix whose rows are not a whole number of 256-value blocks
//! (all of SmolLM2's but the down projections) with one `vec_dot_q8_0_q8_0` per (token, weight
//! row): one accumulator, so each block waits for the previous block's multiply-add, and two
//! f16 → f32 conversions per block through a function call (perf: 68 % and 6 % of a decode
//! step). Here the matrix is repacked at load time (the 32 quantized values of every block
//! contiguous, the block scales as f32 beside them), and four weight rows are multiplied at
//! once against one quantized activation row: four independent accumulators, each activation
//! block loaded once for four rows, and each group of four rows read once for every row of a
//! decode batch while it sits in the L1 cache.
//!
//! The arithmetic is llama.cpp's and candle's for Q8_0 × Q8_0, operation for operation:
//! activations quantized per 32-value block to `round(x / d)` with `d = max|x| / 127`, the
//! scale rounded to f16 as a stored Q8_0 block's is; per block, the integer dot product times
//! the product of both scales, added to one accumulator per row in block order. So a row's
//! result is the one candle's `vec_dot_q8_0_q8_0` gives (greedy output on SmolLM2 unchanged;
//! with the activation scale kept in f32 instead, it left the reference after 15 tokens).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::packed::{self, Activations, PackedWeight};

/// Values per Q8_0 block.
const BLOCK: usize = 32;
/// Bytes of one stored Q8_0 block: an f16 scale and 32 signed bytes.
const STORED_BLOCK_BYTES: usize = 2 + BLOCK;
/// Weight rows multiplied together: four accumulators, one activation load per block for four.
const ROWS_PER_STEP: usize = 4;

/// Whether this CPU runs the kernel (x86-64 with AVX2 and FMA); otherwise candle's is used.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether candle 0.11 multiplies a Q8_0 `[out, in]` weight with its own repacked tiles
/// (`repack_x86::select`: AVX-512 VNNI or AVX-VNNI, `out` a multiple of 16, `in` of 256), which
/// this kernel is left to: they are as fast, and their activations are quantized in 256-value
/// blocks, so taking them over would change the model's rounding (SmolLM2's down projections).
pub fn candle_tiles_q8_0(out: usize, in_features: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = (std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni"))
            || std::arch::is_x86_feature_detected!("avxvnni");
        vnni && out % 16 == 0 && in_features % 256 == 0 && in_features > 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (out, in_features);
        false
    }
}

/// A Q8_0 `[out, in]` weight, repacked in groups of four rows, block by block: for group `g`
/// and block `b`, at `data[(g * blocks + b) * GROUP_BLOCK_BYTES..]`, the four rows' scales (f32)
/// and then their 32 values each, so one pass over a group reads one sequential stream. Rows
/// past `rows` (padding the last group to four) are zeros.
#[derive(Debug)]
pub struct PackedQ8 {
    rows: usize,
    columns: usize,
    blocks: usize,
    data: Vec<u8>,
}

/// Bytes of one block of a four-row group: four f32 scales and four times 32 values.
const GROUP_BLOCK_BYTES: usize = ROWS_PER_STEP * (4 + BLOCK);

impl PackedQ8 {
    /// Repacks a Q8_0 QTensor of shape `[out, in]`.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        if q.dtype() != GgmlDType::Q8_0 {
            bail!("PackedQ8 holds Q8_0 weights, not {:?}", q.dtype());
        }
        let (rows, columns) = q.shape().dims2()?;
        if columns % BLOCK != 0 {
            bail!("Q8_0 rows of {columns} values are not whole 32-value blocks");
        }
        let blocks = columns / BLOCK;
        let data = q.data()?;
        if data.len() != rows * blocks * STORED_BLOCK_BYTES {
            bail!(
                "a Q8_0 [{rows}, {columns}] tensor holds {} bytes, not {}",
                data.len(),
                rows * blocks * STORED_BLOCK_BYTES
            );
        }
        let groups = rows.div_ceil(ROWS_PER_STEP);
        let mut packed = vec![0u8; groups * blocks * GROUP_BLOCK_BYTES];
        for (row, stored) in data.chunks_exact(blocks * STORED_BLOCK_BYTES).enumerate() {
            let (g, r) = (row / ROWS_PER_STEP, row % ROWS_PER_STEP);
            for (b, block) in stored.chunks_exact(STORED_BLOCK_BYTES).enumerate() {
                let at = (g * blocks + b) * GROUP_BLOCK_BYTES;
                let scale = f16::from_le_bytes([block[0], block[1]]).to_f32();
                packed[at + 4 * r..at + 4 * r + 4].copy_from_slice(&scale.to_le_bytes());
                let qs = at + 4 * ROWS_PER_STEP + BLOCK * r;
                packed[qs..qs + BLOCK].copy_from_slice(&block[2..]);
            }
        }
        Ok(PackedQ8 {
            rows,
            columns,
            blocks,
            data: packed,
        })
    }

    /// Bytes one pass over the weight reads.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `row`'s scale and values of block `b`.
    fn block(&self, row: usize, b: usize) -> (f32, &[u8]) {
        let (g, r) = (row / ROWS_PER_STEP, row % ROWS_PER_STEP);
        let at = (g * self.blocks + b) * GROUP_BLOCK_BYTES;
        let scale = read_f32(&self.data[at + 4 * r..]);
        let qs = at + 4 * ROWS_PER_STEP + BLOCK * r;
        (scale, &self.data[qs..qs + BLOCK])
    }

    /// `x Wᵀ` for `x` of shape `[..., in]`: each row of `x` quantized to Q8_0, then multiplied.
    pub fn matmul_t(&self, xs: &Tensor) -> Result<Tensor> {
        packed::matmul_t(self, xs)
    }
}

impl PackedWeight for PackedQ8 {
    fn rows(&self) -> usize {
        self.rows
    }

    fn columns(&self) -> usize {
        self.columns
    }

    /// Weight rows `start..end` (`start` a multiple of four) times each of the `m` quantized
    /// activation rows: the result for activation row `i` and weight row `r` goes to
    /// `dst[i * stride + r - start]`.
    fn rows_times(
        &self,
        start: usize,
        end: usize,
        a: &Activations,
        dst: &mut [f32],
        stride: usize,
    ) {
        let (m, a_qs, a_scales) = (a.rows, &a.qs, &a.scales);
        let (k, nb) = (self.columns, self.blocks);
        let group_bytes = nb * GROUP_BLOCK_BYTES;
        let mut row = start;
        while row < end {
            let step = ROWS_PER_STEP.min(end - row);
            let group = &self.data[row / ROWS_PER_STEP * group_bytes..][..group_bytes];
            // The group's four rows stay in L1 while every activation row uses them.
            for i in 0..m {
                let a = &a_qs[i * k..(i + 1) * k];
                let ad = &a_scales[i * nb..(i + 1) * nb];
                let sums = dot4(nb, group, a, ad);
                let at = i * stride + row - start;
                dst[at..at + step].copy_from_slice(&sums[..step]);
            }
            row += step;
        }
    }

    fn dequantize_rows(&self, start: usize, end: usize, dst: &mut [f32]) {
        packed::with_wide_vectors(|| {
            for (row, out) in (start..end).zip(dst.chunks_exact_mut(self.columns)) {
                for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                    let (d, qs) = self.block(row, b);
                    for (o, &q) in out.iter_mut().zip(qs) {
                        *o = q as i8 as f32 * d;
                    }
                }
            }
        })
    }
}

fn read_f32(bytes: &[u8]) -> f32 {
    f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// One four-row group (`nb` blocks of `GROUP_BLOCK_BYTES`) against one activation row.
fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a PackedQ8 is only built when `available()` holds (Linear checks it).
        unsafe { avx2::dot4(nb, group, a, ad) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [0f32; 4];
        for b in 0..nb {
            let at = b * GROUP_BLOCK_BYTES;
            for (r, o) in out.iter_mut().enumerate() {
                let scale = read_f32(&group[at + 4 * r..]);
                let qs = &group[at + 4 * ROWS_PER_STEP + BLOCK * r..][..BLOCK];
                let sum: i32 = qs
                    .iter()
                    .zip(&a[b * BLOCK..(b + 1) * BLOCK])
                    .map(|(&w, &x)| w as i8 as i32 * x as i32)
                    .sum();
                *o += sum as f32 * scale * ad[b];
            }
        }
        out
    }
}

/// Quantizes each `k`-value row of `x` to Q8_0 as ggml's `quantize_row_q8_0` does: per block,
/// `d = max|x| / 127`, values `round(x / d)`, and the scale rounded to f16. Returns the values
/// and the per-block scales.
pub(super) fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut qs = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    debug_assert_eq!(k % BLOCK, 0);
    for (block, out) in x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (o, &v) in out.iter_mut().zip(block) {
            *o = (v * id).round() as i8;
        }
        scales.push(f16::from_f32(d).to_f32());
    }
    (qs, scales)
}

/// The AVX2 kernel, and the block product and lane sum the Q4_1 and Q5_0 kernels share.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP_BLOCK_BYTES, ROWS_PER_STEP};

    /// The integer dot products of one 32-value block pair, as 8 f32 lanes to be summed.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::backend::cpu) fn block_dot(w: __m256i, a: __m256i) -> __m256 {
        // maddubs multiplies unsigned by signed bytes: move w's sign onto a. |w| <= 128 and
        // |a| <= 127, so a pair sum (at most 2 × 128 × 127 = 32,512) fits its i16.
        let abs_w = _mm256_sign_epi8(w, w);
        let signed_a = _mm256_sign_epi8(a, w);
        let pairs = _mm256_maddubs_epi16(abs_w, signed_a);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// The sum of a vector's eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(in crate::backend::cpu) fn hsum(x: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(x, 1);
        let s = _mm_add_ps(hi, _mm256_castps256_ps128(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One four-row group (`nb` blocks of `GROUP_BLOCK_BYTES`: four f32 scales, four times 32
    /// values) against one activation row (`a`, `nb * 32` values; `ad`, `nb` scales).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32]) -> [f32; 4] {
        assert!(group.len() >= nb * GROUP_BLOCK_BYTES);
        assert!(a.len() >= nb * BLOCK && ad.len() >= nb);
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_STEP];
        let gp = group.as_ptr();
        let ap = a.as_ptr();
        for b in 0..nb {
            // SAFETY: b < nb and the lengths are asserted above.
            unsafe {
                let block = gp.add(b * GROUP_BLOCK_BYTES);
                let av = _mm256_loadu_si256(ap.add(b * BLOCK) as *const __m256i);
                // The four rows' scales times the activation block's, in one multiply.
                let scales = _mm_mul_ps(
                    _mm_loadu_ps(block as *const f32),
                    _mm_set1_ps(*ad.get_unchecked(b)),
                );
                let mut lanes = [0f32; ROWS_PER_STEP];
                _mm_storeu_ps(lanes.as_mut_ptr(), scales);
                let qs = block.add(4 * ROWS_PER_STEP);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_si256(qs.add(r * BLOCK) as *const __m256i);
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(lanes[r]), block_dot(wv, av), *acc);
                }
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn the_kernel_matches_a_plain_product_of_the_same_values() {
        if !available() {
            return;
        }
        // 7 rows (one group of four, a tail of three), 96 values (3 blocks), 5 input rows.
        let (rows, k, m) = (7, 96, 5);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let w = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let packed = PackedQ8::from_qtensor(&q).unwrap();
        let exact = q.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            packed.dequantize().unwrap().to_vec2::<f32>().unwrap(),
            exact.to_vec2::<f32>().unwrap()
        );
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0)
            .collect();
        // The reference: the same quantized activations, multiplied in plain f32.
        let (a_qs, a_scales) = quantize_rows(&x, k);
        let a: Vec<f32> = a_qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * a_scales[i / BLOCK])
            .collect();
        let a = Tensor::from_vec(a, (1, m, k), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(x, (1, m, k), &Device::Cpu).unwrap();
        let ours = packed.matmul_t(&x).unwrap();
        assert_eq!(ours.dims(), [1, m, rows]);
        let plain = a.broadcast_matmul(&exact.t().unwrap()).unwrap();
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let plain = plain.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&plain) {
            // Integer block sums are exact; only the f32 scaling and summation order differ.
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        // Each output row is computed alone: one row in, the same values out.
        let first = x.narrow(1, 0, 1).unwrap();
        let alone = packed.matmul_t(&first).unwrap();
        assert_eq!(
            alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ours[..rows]
        );
    }
}
