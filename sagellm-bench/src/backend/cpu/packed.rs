//! What our repacked kernels (Q8_0, Q4_1, Q5_0) share: activation rows quantized once, and the
//! products of several weights with them split over the threads in one parallel region.
//!
//! A decode step multiplies 211 matrices on SmolLM2, and q, k and v (and the MLP's gate and
//! up) read the same normed activations. Multiplied together, the activations are quantized
//! once instead of three (two) times, and the threads meet once per group instead of once per
//! matrix; k's and v's 192 rows alone were three tasks for two threads.

use candle_core::{bail, Device, Result, Tensor};

use super::q8::quantize_rows;

/// Weight rows per parallel task (a multiple of four, the kernels' row group).
const ROWS_PER_TASK: usize = 32;

/// Activation rows quantized to Q8_0 per 32-value block, as ggml quantizes them.
pub(super) struct Activations {
    /// The quantized values, `rows * columns`.
    pub qs: Vec<i8>,
    /// Per block, its scale.
    pub scales: Vec<f32>,
    /// Per block, its scale times the sum of its values (the part Q4_1's minimum multiplies).
    pub sums: Vec<f32>,
    pub rows: usize,
}

impl Activations {
    pub fn quantize(x: &[f32], columns: usize) -> Self {
        let (qs, scales) = quantize_rows(x, columns);
        let sums = qs
            .chunks_exact(32)
            .zip(&scales)
            .map(|(block, &d)| d * block.iter().map(|&q| q as i32).sum::<i32>() as f32)
            .collect();
        Activations {
            qs,
            scales,
            sums,
            rows: x.len() / columns.max(1),
        }
    }
}

/// A weight repacked for one of our kernels.
pub(super) trait PackedWeight: Sync {
    /// Output features.
    fn rows(&self) -> usize;
    /// Input features.
    fn columns(&self) -> usize;
    /// Weight rows `start..end` (`start` a multiple of four) times every activation row: the
    /// result for activation row `i` and weight row `r` goes to `dst[i * stride + r - start]`.
    fn rows_times(&self, start: usize, end: usize, a: &Activations, dst: &mut [f32], stride: usize);
    /// Weight rows `start..end` as f32 into `dst`, `[end - start, columns]` row-major.
    fn dequantize_rows(&self, start: usize, end: usize, dst: &mut [f32]);

    /// The weight's values as an f32 `[out, in]` tensor.
    fn dequantize(&self) -> Result<Tensor> {
        let (rows, columns) = (self.rows(), self.columns());
        let mut values = vec![0f32; rows * columns];
        self.dequantize_rows(0, rows, &mut values);
        Tensor::from_vec(values, (rows, columns), &Device::Cpu)
    }
}

/// Runs `f` compiled for AVX2, FMA and F16C where the CPU has them, so that plain loops in it
/// (the formats' row dequantization) vectorise eight floats wide instead of SSE2's four.
#[inline(always)]
pub(super) fn with_wide_vectors<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if super::q4_1::available() {
            // SAFETY: the features `wide` is compiled for were detected just above.
            return unsafe { wide(f) };
        }
    }
    f()
}

/// The rows of `weights` stacked (the first weight's rows, then the second's...) as one f32
/// `[Σ rows, columns]` matrix in `dst`, in tasks of [`ROWS_PER_TASK`] rows: a prompt chunk's
/// dense path expands q, k and v (or gate and up) in one parallel region.
///
/// Over candle's barrier pool, as the GEMM that follows (`linear::dense_gemm`): on another
/// pool, the barrier worker left spinning after the expansion (or the GEMM's pool after the
/// GEMM) would hold the second core a while for nothing.
pub(super) fn dequantize_stacked(weights: &[&dyn PackedWeight], dst: &mut [f32]) {
    let columns = weights.first().map_or(0, |w| w.columns());
    let total: usize = weights.iter().map(|w| w.rows()).sum();
    assert!(weights.iter().all(|w| w.columns() == columns));
    assert_eq!(
        dst.len(),
        total * columns,
        "one f32 per stacked weight value"
    );
    // (weight, first row, last row + 1, first value in `dst`) of every task.
    let mut tasks = Vec::new();
    let mut offset = 0;
    for w in weights {
        for start in (0..w.rows()).step_by(ROWS_PER_TASK) {
            let end = w.rows().min(start + ROWS_PER_TASK);
            tasks.push((*w, start, end, offset));
            offset += (end - start) * columns;
        }
    }
    // With no workers (one thread) `execute_chunked` runs every task here, in order.
    let shared = SharedOut(dst.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
        for &(w, start, end, offset) in &tasks[range] {
            // SAFETY: the tasks' ranges `offset..offset + (end - start) * columns` tile `dst`
            // without overlap (built above), `dst` outlives `execute_chunked`, which returns
            // when every task is done, and each task is handed to one thread.
            let part = unsafe {
                std::slice::from_raw_parts_mut(shared.at(offset), (end - start) * columns)
            };
            w.dequantize_rows(start, end, part);
        }
    });
}

/// `x Wᵀ` for `x` of shape `[..., in]`.
pub(super) fn matmul_t(w: &dyn PackedWeight, xs: &Tensor) -> Result<Tensor> {
    let mut out = fused(&[w], xs)?;
    Ok(out.pop().expect("one weight, one product"))
}

/// `x Wᵀ` for each weight `W` of `weights` (all with `x`'s row length), in one parallel region.
pub(super) fn fused(weights: &[&dyn PackedWeight], xs: &Tensor) -> Result<Vec<Tensor>> {
    let dims = xs.dims().to_vec();
    let Some(&columns) = dims.last() else {
        bail!("a matrix product needs at least one dimension");
    };
    if let Some(w) = weights.iter().find(|w| w.columns() != columns) {
        bail!(
            "input rows of {columns} values against a [{}, {}] weight",
            w.rows(),
            w.columns()
        );
    }
    let input = xs.flatten_all()?.to_vec1::<f32>()?;
    let a = Activations::quantize(&input, columns);
    products(weights, &a)
        .into_iter()
        .zip(weights)
        .map(|(out, w)| {
            let mut shape = dims.clone();
            *shape.last_mut().expect("checked above") = w.rows();
            Tensor::from_vec(out, shape, &Device::Cpu)
        })
        .collect()
}

/// Each weight's `[m, rows]` products with the `m` activation rows: all at once on one thread,
/// or in tasks of [`ROWS_PER_TASK`] rows (of every weight) over candle's barrier pool.
///
/// The barrier pool, not rayon: its caller computes a share itself and its workers spin a
/// while before they park, so a decode step's products cost no thread wake-up each. With
/// rayon's pool, called from outside it, the caller slept on a latch while the pool's threads
/// worked, and woke them and was woken once per product (perf at 2 threads: a third of the
/// samples on the caller, in futex waits; 2 threads decoded 1.15x faster than one).
fn products(weights: &[&dyn PackedWeight], a: &Activations) -> Vec<Vec<f32>> {
    let m = a.rows;
    let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; m * w.rows()]).collect();
    // (weight, first row) of every task, weight by weight.
    let tasks: Vec<(usize, usize)> = weights
        .iter()
        .enumerate()
        .flat_map(|(j, w)| (0..w.rows()).step_by(ROWS_PER_TASK).map(move |s| (j, s)))
        .collect();
    let pool = candle_core::utils::barrier_pool();
    if pool.n_workers() == 0 || tasks.len() < 2 {
        for (w, out) in weights.iter().zip(&mut outs) {
            w.rows_times(0, w.rows(), a, out, w.rows());
        }
        return outs;
    }
    let shared: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
    pool.execute_chunked(tasks.len(), |range| {
        let shared = &shared;
        for &(j, start) in &tasks[range] {
            let (w, rows) = (weights[j], weights[j].rows());
            let end = rows.min(start + ROWS_PER_TASK);
            let width = end - start;
            let mut part = vec![0f32; m * width];
            w.rows_times(start, end, a, &mut part, width);
            for (i, chunk) in part.chunks_exact(width).enumerate() {
                // SAFETY: `outs[j]` holds `m * rows` values and outlives `execute_chunked`,
                // which returns when every task is done; the tasks of one weight cover disjoint
                // rows, so each writes its own columns `start..end` of each activation row,
                // which no other task reads or writes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        chunk.as_ptr(),
                        shared[j].at(i * rows + start),
                        width,
                    );
                }
            }
        }
    });
    outs
}

/// An output buffer that the barrier pool's tasks write at disjoint places ([`products`],
/// [`dequantize_stacked`], `linear::dense_gemm`).
pub(super) struct SharedOut(pub *mut f32);

impl SharedOut {
    /// The place `offset` values in (a method, so that a closure captures the whole `Sync`
    /// wrapper rather than its raw pointer field alone).
    pub fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

// SAFETY: every user writes disjoint ranges from its tasks (see each one's SAFETY comment),
// and the pointer does not outlive the buffer it points into.
unsafe impl Sync for SharedOut {}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};

    use super::super::{q4_1::PackedQ4_1, q5_0::PackedQ5_0, q8::PackedQ8};
    use super::*;

    fn weight(rows: usize, k: usize, seed: usize, format: GgmlDType) -> QTensor {
        let w: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 + seed) % 101) as f32 / 40.0 - 1.2)
            .collect();
        let w = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, format).unwrap()
    }

    #[test]
    fn fused_products_equal_each_weight_multiplied_alone() {
        if !super::super::q4_1::available() {
            return;
        }
        // More rows than one task, a tail that is not a whole task, and three formats: the
        // tasks of the three weights interleave over the threads.
        let k = 64;
        let q = PackedQ8::from_qtensor(&weight(100, k, 1, GgmlDType::Q8_0)).unwrap();
        let up = PackedQ4_1::from_qtensor(&weight(70, k, 2, GgmlDType::Q4_1)).unwrap();
        let v = PackedQ5_0::from_qtensor(&weight(36, k, 3, GgmlDType::Q5_0)).unwrap();
        let x: Vec<f32> = (0..3 * k).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
        let x = Tensor::from_vec(x, (1, 3, k), &Device::Cpu).unwrap();
        let fused = fused(&[&q, &up, &v], &x).unwrap();
        let alone = [
            q.matmul_t(&x).unwrap(),
            up.matmul_t(&x).unwrap(),
            v.matmul_t(&x).unwrap(),
        ];
        for (f, a) in fused.iter().zip(&alone) {
            assert_eq!(f.dims(), a.dims());
            assert_eq!(
                f.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        assert_eq!(fused[1].dims(), [1, 3, 70]);
    }
}
