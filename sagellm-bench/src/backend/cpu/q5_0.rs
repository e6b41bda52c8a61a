//! Q5_0 weights multiplied by our own AVX2 kernel, for decode: the format `--dtype q4k` falls
//! back to on rows that are not whole 256-value K-blocks (all of SmolLM2's but the down
//! projections), as llama-quantize falls back.
//!
//! candle 0.11 multiplies Q5_0 with scalar code (`--dtype q4k` decoded at 10 tok/s on SmolLM2,
//! a fifth of `q8_0`, although it reads fewer bytes). A Q5_0 value is `d (q - 16)` with `q` in
//! 0..32, its low four bits in a nibble and its fifth in a 32-bit mask per block. The kernel
//! spreads the mask's bits to bytes, joins them to the nibbles as signed bytes `q - 16`, and
//! multiplies those by the Q8_0-quantized activation block as the Q8_0 kernel does; per block
//! the integer sum times both scales, as candle's and llama.cpp's Q5_0 × Q8_0 products do. As in
//! [`super::q4_1`], the weights are repacked in groups of four rows (per block: the four `d`
//! as f16, the four masks, then the four rows' 16 bytes of nibbles) and four rows are
//! multiplied at once.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{bail, Result, Tensor};
use half::f16;

use super::packed::{self, Activations, PackedWeight};
#[cfg(test)]
use super::q8::quantize_rows;

const BLOCK: usize = 32;
/// Bytes of one stored Q5_0 block: f16 `d`, the 32 fifth bits, 16 bytes of nibbles.
const STORED_BLOCK_BYTES: usize = 2 + 4 + BLOCK / 2;
const ROWS_PER_STEP: usize = 4;
/// Bytes of one block of a four-row group: four f16 `d`, four masks, four times 16 bytes.
const GROUP_BLOCK_BYTES: usize = ROWS_PER_STEP * STORED_BLOCK_BYTES;
const MASKS_AT: usize = 2 * ROWS_PER_STEP;
const NIBBLES_AT: usize = MASKS_AT + 4 * ROWS_PER_STEP;

/// Whether this CPU runs the kernel (x86-64 with AVX2, FMA and F16C).
pub fn available() -> bool {
    super::q4_1::available()
}

/// A Q5_0 `[out, in]` weight in groups of four rows (layout in the module comment); rows
/// padding the last group are zeros.
#[derive(Debug)]
pub struct PackedQ5_0 {
    rows: usize,
    columns: usize,
    blocks: usize,
    data: Vec<u8>,
}

impl PackedQ5_0 {
    pub fn from_qtensor(q: &QTensor) -> Result<Self> {
        if q.dtype() != GgmlDType::Q5_0 {
            bail!("PackedQ5_0 holds Q5_0 weights, not {:?}", q.dtype());
        }
        let (rows, columns) = q.shape().dims2()?;
        if columns % BLOCK != 0 {
            bail!("Q5_0 rows of {columns} values are not whole 32-value blocks");
        }
        let blocks = columns / BLOCK;
        let data = q.data()?;
        if data.len() != rows * blocks * STORED_BLOCK_BYTES {
            bail!(
                "a Q5_0 [{rows}, {columns}] tensor holds {} bytes, not {}",
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
                packed[at + 2 * r..at + 2 * r + 2].copy_from_slice(&block[0..2]);
                let mask = at + MASKS_AT + 4 * r;
                packed[mask..mask + 4].copy_from_slice(&block[2..6]);
                let qs = at + NIBBLES_AT + 16 * r;
                packed[qs..qs + 16].copy_from_slice(&block[6..]);
            }
        }
        Ok(PackedQ5_0 {
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

impl PackedWeight for PackedQ5_0 {
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
        let (m, a_qs, a_scales) = (a.rows, &a.qs, &a.scales);
        let (k, nb) = (self.columns, self.blocks);
        let group_bytes = nb * GROUP_BLOCK_BYTES;
        let mut row = start;
        while row < end {
            let step = ROWS_PER_STEP.min(end - row);
            let group = &self.data[row / ROWS_PER_STEP * group_bytes..][..group_bytes];
            for i in 0..m {
                let a = &a_qs[i * k..(i + 1) * k];
                let blocks = i * nb..(i + 1) * nb;
                let sums = dot4(nb, group, a, &a_scales[blocks]);
                let at = i * stride + row - start;
                dst[at..at + step].copy_from_slice(&sums[..step]);
            }
            row += step;
        }
    }

    fn dequantize_rows(&self, start: usize, end: usize, dst: &mut [f32]) {
        packed::with_wide_vectors(|| dequantize_rows(self, start, end, dst))
    }
}

/// Rows `start..end` as f32 into `dst` (`[end - start, columns]`), block by block; written
/// so the compiler vectorises it (called under AVX2 by `with_wide_vectors`).
#[inline(always)]
fn dequantize_rows(w: &PackedQ5_0, start: usize, end: usize, dst: &mut [f32]) {
    let group_bytes = w.blocks * GROUP_BLOCK_BYTES;
    for (row, out) in (start..end).zip(dst.chunks_exact_mut(w.columns)) {
        let (g, r) = (row / ROWS_PER_STEP, row % ROWS_PER_STEP);
        let group = &w.data[g * group_bytes..][..group_bytes];
        for (block, out) in group
            .chunks_exact(GROUP_BLOCK_BYTES)
            .zip(out.chunks_exact_mut(BLOCK))
        {
            let d = read_f16(&block[2 * r..]);
            for (j, o) in out.iter_mut().enumerate() {
                *o = value(block, r, j) as f32 * d;
            }
        }
    }
}

fn read_f16(bytes: &[u8]) -> f32 {
    f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// Value `j` (0..32) of row `r` in a group's block, as the signed `q - 16`.
fn value(block: &[u8], r: usize, j: usize) -> i32 {
    let at = MASKS_AT + 4 * r;
    let mask = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
    let nibbles = block[NIBBLES_AT + 16 * r + j % 16];
    let low = if j < 16 { nibbles & 0x0f } else { nibbles >> 4 };
    (low as i32 | (((mask >> j) & 1) << 4) as i32) - 16
}

/// One four-row group against one activation row (`a`, its block scales `ad`).
fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: a PackedQ5_0 is only built when `available()` holds (Linear checks it).
        unsafe { avx2::dot4(nb, group, a, ad) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut out = [0f32; 4];
        for b in 0..nb {
            let block = &group[b * GROUP_BLOCK_BYTES..];
            for (r, o) in out.iter_mut().enumerate() {
                let d = read_f16(&block[2 * r..]);
                let sum: i32 = (0..BLOCK)
                    .map(|j| value(block, r, j) * a[b * BLOCK + j] as i32)
                    .sum();
                *o += sum as f32 * d * ad[b];
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::q8::avx2::{block_dot, hsum};
    use super::{BLOCK, GROUP_BLOCK_BYTES, MASKS_AT, NIBBLES_AT, ROWS_PER_STEP};

    /// 32 bytes, byte `j` all ones where bit `j` of `mask` is set, zero where clear.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bits_to_bytes(mask: i32) -> __m256i {
        // Byte j gets mask byte j / 8; or-ing every bit but bit j % 8 leaves all ones only
        // where that bit was set.
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(mask),
            _mm256_set_epi64x(
                0x0303030303030303,
                0x0202020202020202,
                0x0101010101010101,
                0,
            ),
        );
        let others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1))
    }

    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4(nb: usize, group: &[u8], a: &[i8], ad: &[f32]) -> [f32; 4] {
        assert!(group.len() >= nb * GROUP_BLOCK_BYTES);
        assert!(a.len() >= nb * BLOCK && ad.len() >= nb);
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_STEP];
        let low = _mm256_set1_epi8(0x0f);
        let minus_16 = _mm256_set1_epi8(-16);
        let gp = group.as_ptr();
        let ap = a.as_ptr();
        for b in 0..nb {
            // SAFETY: b < nb and the lengths are asserted above.
            unsafe {
                let block = gp.add(b * GROUP_BLOCK_BYTES);
                let av = _mm256_loadu_si256(ap.add(b * BLOCK) as *const __m256i);
                let d = _mm_cvtph_ps(_mm_loadl_epi64(block as *const __m128i));
                let scales = _mm_mul_ps(d, _mm_set1_ps(*ad.get_unchecked(b)));
                let mut lanes = [0f32; ROWS_PER_STEP];
                _mm_storeu_ps(lanes.as_mut_ptr(), scales);
                let masks = block.add(MASKS_AT) as *const i32;
                let qs = block.add(NIBBLES_AT);
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Values 0..16 of the 32 in the low nibbles, 16..32 in the high ones.
                    let packed = _mm_loadu_si128(qs.add(16 * r) as *const __m128i);
                    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
                    let q = _mm256_and_si256(both, low);
                    // q - 16 where the fifth bit is clear (q | 0xf0), q where it is set.
                    let fifth = bits_to_bytes(masks.add(r).read_unaligned());
                    let w = _mm256_or_si256(q, _mm256_andnot_si256(fifth, minus_16));
                    *acc = _mm256_fmadd_ps(_mm256_set1_ps(lanes[r]), block_dot(w, av), *acc);
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
        let (rows, k, m) = (7, 96, 3);
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 30.0) / 40.0)
            .collect();
        let w = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
        let packed = PackedQ5_0::from_qtensor(&q).unwrap();
        let exact = q.dequantize(&Device::Cpu).unwrap();
        assert_eq!(
            packed.dequantize().unwrap().to_vec2::<f32>().unwrap(),
            exact.to_vec2::<f32>().unwrap()
        );
        // Both signs of the fifth bit and of the values occur: the test covers the mask.
        let values = exact.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(values.iter().any(|&v| v > 0.3) && values.iter().any(|&v| v < -0.3));
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
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
