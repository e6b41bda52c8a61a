//! Q4_1 weights multiplied by our own AVX2 kernel, for decode: the format SmolLM2's GGUF ships
//! in, read at its own size (20 bytes per 32 weights, against Q8_0's 34). Q4_0 weights are held
//! and multiplied as Q4_1 too (see [`PackedQ4_1::from_qtensor`]).
//!
//! candle 0.11 has no vectorised Q4_1 kernel (`--dtype keep` decoded at 11 tok/s). A Q4_1
//! value is `d q + m` with `q` in 0..16, so a block's dot product with a Q8_0-quantized
//! activation block (`da a`) is `d da Σ q a + m da Σ a`: the first sum is one unsigned-by-signed
//! byte multiply (`q` needs no sign trick), the second the activation block's sum, computed
//! once per activation row. As in [`super::q8`], the weights are repacked in groups of four
//! rows (per block: the four `d`, the four `m`, as f16, then the four rows' 16 bytes of
//! nibbles) and four rows are multiplied at once.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::packed::{self, Activations, PackedWeight};
#[cfg(test)]
use super::q8::quantize_rows;

const BLOCK: usize = 32;
/// Bytes of one stored Q4_1 block: f16 `d`, f16 `m`, 16 bytes of nibbles.
const STORED_BLOCK_BYTES: usize = 4 + BLOCK / 2;
const ROWS_PER_STEP: usize = 4;
/// Bytes of one block of a four-row group: four f16 `d`, four f16 `m`, four times 16 bytes.
const GROUP_BLOCK_BYTES: usize = ROWS_PER_STEP * STORED_BLOCK_BYTES;
const NIBBLES_AT: usize = 4 * ROWS_PER_STEP;

/// Whether this CPU runs the kernel (x86-64 with AVX2, FMA and F16C).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::q8::available() && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A Q4_1 `[out, in]` weight in groups of four rows (layout in the module comment); rows
/// padding the last group are zeros.
#[derive(Debug)]
pub struct PackedQ4_1 {
    rows: usize,
    columns: usize,
    blocks: usize,
    data: Vec<u8>,
}

impl PackedQ4_1 {
    /// Repacks a Q4_1 or a Q4_0 QTensor of shape `[out, in]`.
    ///
    /// A Q4_0 value `d (q - 8)` is the Q4_1 value `d q + m` with `m = -8 d`, which f16 holds
    /// exactly (eight times an f16 is one, unless it overflows), so every value is the one the
    /// file stores, and Q4_0 decodes on this kernel (candle's Q4_0 product decoded SmolLM2 at a
    /// third of this one's speed, docs/PERFORMANCE.md) for two bytes more per 32 values than
    /// its own 18. A scale whose `-8 d` leaves f16 (past 8188, no real model's) is refused.
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        // Bytes of one stored block, and its `d`, `m` (as f16 bytes) and nibbles.
        type Split<'a> = Result<([u8; 2], [u8; 2], &'a [u8])>;
        let (stored_bytes, split): (usize, fn(&[u8]) -> Split<'_>) = match q.dtype() {
            GgmlDType::Q4_1 => (STORED_BLOCK_BYTES, |block| {
                Ok(([block[0], block[1]], [block[2], block[3]], &block[4..]))
            }),
            GgmlDType::Q4_0 => (2 + BLOCK / 2, |block| {
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let m = f16::from_f32(-8.0 * d);
                if m.to_f32() != -8.0 * d {
                    bail!("a Q4_0 block scale of {d} has no Q4_1 minimum in f16");
                }
                Ok(([block[0], block[1]], m.to_le_bytes(), &block[2..]))
            }),
            other => bail!("PackedQ4_1 holds Q4_1 or Q4_0 weights, not {other:?}"),
        };
        let (rows, columns) = q.shape().dims2()?;
        if columns % BLOCK != 0 {
            bail!("4-bit rows of {columns} values are not whole 32-value blocks");
        }
        let blocks = columns / BLOCK;
        let data = q.data()?;
        if data.len() != rows * blocks * stored_bytes {
            bail!(
                "a {:?} [{rows}, {columns}] tensor holds {} bytes, not {}",
                q.dtype(),
                data.len(),
                rows * blocks * stored_bytes
            );
        }
        let groups = rows.div_ceil(ROWS_PER_STEP);
        let mut packed = vec![0u8; groups * blocks * GROUP_BLOCK_BYTES];
        for (row, stored) in data.chunks_exact(blocks * stored_bytes).enumerate() {
            let (g, r) = (row / ROWS_PER_STEP, row % ROWS_PER_STEP);
            for (b, block) in stored.chunks_exact(stored_bytes).enumerate() {
                let (d, m, nibbles) = split(block)?;
                let at = (g * blocks + b) * GROUP_BLOCK_BYTES;
                packed[at + 2 * r..at + 2 * r + 2].copy_from_slice(&d);
                packed[at + 8 + 2 * r..at + 8 + 2 * r + 2].copy_from_slice(&m);
                let qs = at + NIBBLES_AT + 16 * r;
                packed[qs..qs + 16].copy_from_slice(nibbles);
            }
        }
        Ok(PackedQ4_1 {
            rows,
            columns,
            blocks,
            data: packed,
        })
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// `x Wᵀ` for `x` of shape `[..., in]`.
    pub fn matmul_t(&self, xs: &Tensor) -> Result<Tensor> {
        packed::matmul_t(self, xs)
    }
}

impl PackedWeight for PackedQ4_1 {
    fn rows(&self) -> usize {
        self.rows
    }

    fn columns(&self) -> usize {
        self.columns
    }

    fn rows_times(
        &self,
        start: usize,
        end: usize,
        a: &Activations,
        dst: &mut [f32],
        stride: usize,
    ) {
        let (m, a_qs, a_scales, a_sums) = (a.rows, &a.qs, &a.scales, &a.sums);
        let (k, nb) = (self.columns, self.blocks);
        let group_bytes = nb * GROUP_BLOCK_BYTES;
        let mut row = start;
        while row < end {
            let step = ROWS_PER_STEP.min(end - row);
            let group = &self.data[row / ROWS_PER_STEP * group_bytes..][..group_bytes];
            for i in 0..m {
                let a = &a_qs[i * k..(i + 1) * k];
                let blocks = i * nb..(i + 1) * nb;
                let sums = dot4(nb, group, a, &a_scales[blocks.clone()], &a_sums[blocks]);
                let at = i * stride + row - start;
                dst[at..at + step].copy_from_slice(&sums[..step]);
            }
            row += step;
        }
    }

    fn dequantize_rows(&self, start: usize, end: usize, dst: &mut [f32]) {
        dequantize_rows(self, start, end, dst)
    }
}

/// Rows `start..end` as f32 into `dst` (`[end - start, columns]`), block by block.
fn dequantize_rows(w: &PackedQ4_1, start: usize, end: usize, dst: &mut [f32]) {
    assert!(dst.len() >= (end - start) * w.columns && end <= w.rows);
    let group_bytes = w.blocks * GROUP_BLOCK_BYTES;
    for (row, out) in (start..end).zip(dst.chunks_exact_mut(w.columns)) {
        let (g, r) = (row / ROWS_PER_STEP, row % ROWS_PER_STEP);
        let group = &w.data[g * group_bytes..][..group_bytes];
        for (block, out) in group
            .chunks_exact(GROUP_BLOCK_BYTES)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = read_f16(&block[2 * r..]);
            let m = read_f16(&block[8 + 2 * r..]);
            let qs: &[u8; 16] = block[NIBBLES_AT + 16 * r..][..16].try_into().unwrap();
            let out: &mut [f32; BLOCK] = out.try_into().unwrap();
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: a PackedQ4_1 is only built when `available()` holds (AVX2, FMA).
                unsafe { avx2::dequantize_block(qs, d, m, out) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            for j in 0..16 {
                out[j] = (qs[j] & 0x0f) as f32 * d + m;
                out[j + 16] = (qs[j] >> 4) as f32 * d + m;
            }
        }
    }
}

fn read_f16(bytes: &[u8]) -> f32 {
    f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// One four-row group against one activation row (`a`, its block scales `ad` and sums `asum`).
fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32], asum: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a PackedQ4_1 is only built when `available()` holds (Linear checks it).
        unsafe { avx2::dot4(nb, group, a, ad, asum) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [0f32; 4];
        for b in 0..nb {
            let at = b * GROUP_BLOCK_BYTES;
            for (r, o) in out.iter_mut().enumerate() {
                let d = read_f16(&group[at + 2 * r..]);
                let m = read_f16(&group[at + 8 + 2 * r..]);
                let qs = &group[at + NIBBLES_AT + 16 * r..][..16];
                let x = &a[b * BLOCK..(b + 1) * BLOCK];
                let sum: i32 = qs
                    .iter()
                    .enumerate()
                    .map(|(j, &q)| {
                        (q & 0x0f) as i32 * x[j] as i32 + (q >> 4) as i32 * x[j + 16] as i32
                    })
                    .sum();
                *o += d * ad[b] * sum as f32 + m * asum[b];
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q8::avx2::hsum;
    use super::{BLOCK, GROUP_BLOCK_BYTES, NIBBLES_AT, ROWS_PER_STEP};

    /// One block's 32 values `d q + m` (values 0..16 in the low nibbles, 16..32 the high).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dequantize_block(qs: &[u8; 16], d: f32, m: f32, out: &mut [f32; BLOCK]) {
        let (dv, mv) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
        let low_mask = _mm_set1_epi8(0x0f);
        // SAFETY: 16 bytes read, 32 floats written, as the array types say.
        unsafe {
            let packed = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
            let halves = [
                _mm_and_si128(packed, low_mask),
                _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask),
            ];
            let o = out.as_mut_ptr();
            for (h, bytes) in halves.into_iter().enumerate() {
                let first = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                let second = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)));
                _mm256_storeu_ps(o.add(16 * h), _mm256_fmadd_ps(first, dv, mv));
                _mm256_storeu_ps(o.add(16 * h + 8), _mm256_fmadd_ps(second, dv, mv));
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32], asum: &[f32]) -> [f32; 4] {
        assert!(group.len() >= nb * GROUP_BLOCK_BYTES);
        assert!(a.len() >= nb * BLOCK && ad.len() >= nb && asum.len() >= nb);
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_STEP];
        // The four rows' `m Σ a` terms, one lane each.
        let mut acc_m = _mm_setzero_ps();
        let low = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let gp = group.as_ptr();
        let ap = a.as_ptr();
        for b in 0..nb {
            // SAFETY: b < nb and the lengths are asserted above.
            unsafe {
                let block = gp.add(b * GROUP_BLOCK_BYTES);
                let av = _mm256_loadu_si256(ap.add(b * BLOCK) as *const __m256i);
                let d = _mm_cvtph_ps(_mm_loadl_epi64(block as *const __m128i));
                let m = _mm_cvtph_ps(_mm_loadl_epi64(block.add(8) as *const __m128i));
                acc_m = _mm_fmadd_ps(m, _mm_set1_ps(*asum.get_unchecked(b)), acc_m);
                let scales = _mm_mul_ps(d, _mm_set1_ps(*ad.get_unchecked(b)));
                let mut lanes = [0f32; ROWS_PER_STEP];
                _mm_storeu_ps(lanes.as_mut_ptr(), scales);
                let qs = block.add(NIBBLES_AT);
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Values 0..16 of the 32 in the low nibbles, 16..32 in the high ones.
                    let packed = _mm_loadu_si128(qs.add(16 * r) as *const __m128i);
                    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
                    let q = _mm256_and_si256(both, low);
                    let pairs = _mm256_maddubs_epi16(q, av);
                    let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(lanes[r]), sums, *acc);
                }
            }
        }
        let mut m_terms = [0f32; ROWS_PER_STEP];
        _mm_storeu_ps(m_terms.as_mut_ptr(), acc_m);
        [
            hsum(acc[0]) + m_terms[0],
            hsum(acc[1]) + m_terms[1],
            hsum(acc[2]) + m_terms[2],
            hsum(acc[3]) + m_terms[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Repacks a `[rows, k]` weight quantized to `format`, checks that its expansion is the
    /// stored values exactly, and that the kernel's product with `m` activation rows is the
    /// plain product of the same (quantized) values.
    fn check_against_the_plain_product(format: GgmlDType, rows: usize, k: usize, m: usize) {
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 30.0) / 40.0)
            .collect();
        let w = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, format).unwrap();
        let packed = PackedQ4_1::from_qtensor(&q).unwrap();
        let exact = q.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            packed.dequantize().unwrap().to_vec2::<f32>().unwrap(),
            exact.to_vec2::<f32>().unwrap()
        );
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0)
            .collect();
        let (a_qs, a_scales) = quantize_rows(&x, k);
        let a: Vec<f32> = a_qs
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * a_scales[i / BLOCK])
            .collect();
        let a = Tensor::from_vec(a, (m, k), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
        let ours = packed.matmul_t(&x).unwrap().to_vec2::<f32>().unwrap();
        let plain = a
            .matmul(&exact.t().unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (a, b) in ours.iter().flatten().zip(plain.iter().flatten()) {
            assert!(
                (a - b).abs() < 1e-4 * b.abs().max(1.0),
                "{format:?}: {a} vs {b}"
            );
        }
    }

    #[test]
    fn the_kernel_matches_a_plain_product_of_the_same_values() {
        if !available() {
            return;
        }
        check_against_the_plain_product(GgmlDType::Q4_1, 7, 96, 3);
    }

    #[test]
    fn q4_0_weights_keep_their_values_and_multiply_as_their_plain_product() {
        if !available() {
            return;
        }
        check_against_the_plain_product(GgmlDType::Q4_0, 6, 64, 2);
        // A scale whose -8 d does not fit an f16 is refused, not rounded.
        let huge = Tensor::from_vec(vec![80_000.0f32; 64], (1, 64), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&huge, GgmlDType::Q4_0).unwrap();
        assert!(PackedQ4_1::from_qtensor(&q).is_err());
    }
}
