//! A dense layer whose weight may be quantized: `y = x Wᵀ + b`.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Result, Tensor};

use super::packed::{self, PackedWeight};
use super::precision::PrefillWeights;
use super::q4_1::{self, PackedQ4_1};
use super::q5_0::{self, PackedQ5_0};
use super::q8::{self, PackedQ8};

/// Prompt chunks of at least this many tokens take the `[cpu] prefill_weights` path; fewer,
/// and every decode step, use the decode kernel. Chosen by estimate, not measured: below it
/// the expansion to f32 (or the 4-byte f32 weight reads) costs more than the GEMM saves.
pub const DENSE_MIN_ROWS: usize = 16;

/// The weight (`[out, in]`) in the format chosen at load time, and an optional f32 bias.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: DecodeWeight,
    /// How a prompt chunk multiplies a quantized weight.
    prefill: PrefillPath,
    bias: Option<Tensor>,
    weight_bytes: usize,
    /// The format the weight is multiplied in at decode (`None`: f32).
    format: Option<GgmlDType>,
}

/// The weight as decode multiplies it.
#[derive(Debug, Clone)]
enum DecodeWeight {
    /// f32 (candle's GEMM) or a quantized format candle multiplies.
    Candle(QMatMul),
    /// Q8_0, repacked for our kernel (backend/cpu/q8.rs), where the CPU runs it.
    Q8(Arc<PackedQ8>),
    /// Q4_1 or Q4_0, repacked for our Q4_1 kernel (backend/cpu/q4_1.rs), where the CPU runs it.
    Q4_1(Arc<PackedQ4_1>),
    /// Q5_0, repacked for our kernel (backend/cpu/q5_0.rs), where the CPU runs it.
    Q5_0(Arc<PackedQ5_0>),
}

impl DecodeWeight {
    /// The weight as one of our kernels multiplies it (`None`: candle's).
    fn packed(&self) -> Option<&dyn PackedWeight> {
        match self {
            DecodeWeight::Candle(_) => None,
            DecodeWeight::Q8(w) => Some(&**w),
            DecodeWeight::Q4_1(w) => Some(&**w),
            DecodeWeight::Q5_0(w) => Some(&**w),
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            DecodeWeight::Candle(w) => w.forward(xs),
            DecodeWeight::Q8(w) => w.matmul_t(xs),
            DecodeWeight::Q4_1(w) => w.matmul_t(xs),
            DecodeWeight::Q5_0(w) => w.matmul_t(xs),
        }
    }

    /// The weight's values as f32 `[out, in]`.
    fn dequantize(&self) -> Result<Tensor> {
        match self {
            DecodeWeight::Candle(QMatMul::QTensor(q)) => q.dequantize(&Device::Cpu),
            DecodeWeight::Candle(QMatMul::Tensor(w)) => Ok(w.clone()),
            DecodeWeight::Candle(QMatMul::TensorF16(w)) => w.to_dtype(candle_core::DType::F32),
            DecodeWeight::Q8(w) => w.dequantize(),
            DecodeWeight::Q4_1(w) => w.dequantize(),
            DecodeWeight::Q5_0(w) => w.dequantize(),
        }
    }
}

#[derive(Debug, Clone)]
enum PrefillPath {
    /// The decode path (f32 weights, or `PrefillWeights::Quantized`).
    SameAsDecode,
    /// The quantized weight's values as f32, kept.
    F32Copy(Tensor),
    /// Dequantize the weight for each prompt chunk.
    Dequantize,
}

impl Linear {
    /// Builds from an f32 `[out, in]` weight, quantized to `format` when given (the caller has
    /// checked that the format's blocks divide the rows: see `precision::fitting_format`).
    pub fn from_f32(
        weight: Tensor,
        bias: Option<Tensor>,
        format: Option<GgmlDType>,
        prefill: PrefillWeights,
    ) -> Result<Self> {
        match format {
            Some(format) => {
                let q = QTensor::quantize(&weight, format)?;
                Self::from_qtensor(q, bias, prefill)
            }
            None => {
                let weight_bytes = weight.elem_count() * 4;
                Ok(Linear {
                    weight: DecodeWeight::Candle(QMatMul::Tensor(weight)),
                    prefill: PrefillPath::SameAsDecode,
                    bias,
                    weight_bytes,
                    format: None,
                })
            }
        }
    }

    /// Builds from a quantized weight kept as it is.
    pub fn from_qtensor(
        weight: QTensor,
        bias: Option<Tensor>,
        prefill: PrefillWeights,
    ) -> Result<Self> {
        let format = Some(weight.dtype());
        let (out_features, in_features) = weight.shape().dims2()?;
        let four_bit = match weight.dtype() {
            GgmlDType::Q4_1 | GgmlDType::Q4_0 if q4_1::available() => {
                match PackedQ4_1::from_qtensor(&weight) {
                    Ok(w) => Some(w),
                    // A Q4_0 scale too large for the Q4_1 form (no real model's): candle's.
                    Err(_) if weight.dtype() == GgmlDType::Q4_0 => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let weight = if weight.dtype() == GgmlDType::Q8_0
            && q8::available()
            && !q8::candle_tiles_q8_0(out_features, in_features)
        {
            // Repacked, and candle's copy dropped: the kernel reads only the repacked blocks.
            DecodeWeight::Q8(Arc::new(PackedQ8::from_qtensor(&weight)?))
        } else if let Some(w) = four_bit {
            DecodeWeight::Q4_1(Arc::new(w))
        } else if weight.dtype() == GgmlDType::Q5_0 && q5_0::available() {
            DecodeWeight::Q5_0(Arc::new(PackedQ5_0::from_qtensor(&weight)?))
        } else {
            DecodeWeight::Candle(QMatMul::QTensor(Arc::new(weight)))
        };
        let weight_bytes = match &weight {
            DecodeWeight::Q8(w) => w.bytes(),
            DecodeWeight::Q4_1(w) => w.bytes(),
            DecodeWeight::Q5_0(w) => w.bytes(),
            DecodeWeight::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            DecodeWeight::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                w.elem_count() * w.dtype().size_in_bytes()
            }
        };
        let prefill = match prefill {
            PrefillWeights::Quantized => PrefillPath::SameAsDecode,
            PrefillWeights::F32Copy => PrefillPath::F32Copy(weight.dequantize()?),
            PrefillWeights::Dequantize => PrefillPath::Dequantize,
        };
        Ok(Linear {
            weight,
            prefill,
            bias,
            weight_bytes,
            format,
        })
    }

    /// Bytes of the weight as held in memory for decode (read once per forward pass).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Bytes of the f32 copy kept for prompt chunks (0 unless `prefill_weights = "f32_copy"`).
    pub fn prefill_copy_bytes(&self) -> usize {
        match &self.prefill {
            PrefillPath::F32Copy(w) => w.elem_count() * 4,
            _ => 0,
        }
    }

    /// The format the weight is multiplied in at decode (`None`: f32).
    pub fn format(&self) -> Option<GgmlDType> {
        self.format
    }

    /// `x Wᵀ + b` with the decode weights whatever the number of rows: a decode batch, whose
    /// rows are different sequences, reads the compact weights once for all of them.
    pub fn forward_decode(&self, xs: &Tensor) -> Result<Tensor> {
        self.add_bias(self.weight.forward(xs)?)
    }

    /// `x Wᵀ + b` of each of `layers` (the same input width) with the decode weights, as
    /// [`Linear::forward_decode`] each: when all are on our kernels (backend/cpu/packed.rs),
    /// `x` is quantized once and the products share one parallel region.
    pub fn forward_decode_all<const N: usize>(
        layers: [&Linear; N],
        xs: &Tensor,
    ) -> Result<[Tensor; N]> {
        let packed: Option<Vec<&dyn PackedWeight>> =
            layers.iter().map(|l| l.weight.packed()).collect();
        let ys = match packed {
            Some(weights) => packed::fused(&weights, xs)?,
            None => layers
                .iter()
                .map(|l| l.weight.forward(xs))
                .collect::<Result<Vec<_>>>()?,
        };
        let ys = ys
            .into_iter()
            .zip(layers)
            .map(|(y, l)| l.add_bias(y))
            .collect::<Result<Vec<_>>>()?;
        ys.try_into()
            .map_err(|_| candle_core::Error::Msg("one product per layer".into()))
    }

    /// [`Module::forward`] of each of `layers`: a chunk the decode kernel takes (shorter than
    /// [`DENSE_MIN_ROWS`], or `prefill_weights = "quantized"`) as [`Linear::forward_decode_all`].
    pub fn forward_all<const N: usize>(layers: [&Linear; N], xs: &Tensor) -> Result<[Tensor; N]> {
        let rows = xs.elem_count() / xs.dim(candle_core::D::Minus1)?.max(1);
        let decode_kernel = rows < DENSE_MIN_ROWS
            || layers
                .iter()
                .all(|l| matches!(l.prefill, PrefillPath::SameAsDecode));
        if decode_kernel {
            return Self::forward_decode_all(layers, xs);
        }
        if let Some(ys) = Self::prefill_expanded(&layers, xs)? {
            return ys
                .try_into()
                .map_err(|_| candle_core::Error::Msg("one product per layer".into()));
        }
        let ys = layers
            .iter()
            .map(|l| l.forward(xs))
            .collect::<Result<Vec<_>>>()?;
        ys.try_into()
            .map_err(|_| candle_core::Error::Msg("one product per layer".into()))
    }

    /// The `Dequantize` path of a prompt chunk for layers all on our kernels: their weights
    /// expanded side by side into one reused f32 buffer (in parallel), then one GEMM
    /// (`[rows, in] × [in, Σ out]`) for all of them, split into one product per layer. `None`
    /// when a layer is not on that path (it then goes through [`Module::forward`]).
    ///
    /// Before, each matrix was expanded into a fresh tensor on one thread and multiplied alone
    /// through candle's matmul: at 2 threads the expansion was a serial part of every product,
    /// and k's and v's 192 columns were GEMMs too small to split well.
    fn prefill_expanded(layers: &[&Linear], xs: &Tensor) -> Result<Option<Vec<Tensor>>> {
        let packed: Option<Vec<&dyn PackedWeight>> = layers
            .iter()
            .map(|l| match l.prefill {
                PrefillPath::Dequantize => l.weight.packed(),
                _ => None,
            })
            .collect();
        let Some(weights) = packed else {
            return Ok(None);
        };
        let dims = xs.dims().to_vec();
        let k = *dims.last().expect("forward_all checked the last dimension");
        if weights.iter().any(|w| w.columns() != k) {
            return Ok(None);
        }
        let input = xs
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let m = input.len() / k.max(1);
        let n: usize = weights.iter().map(|w| w.rows()).sum();
        let stacked = PREFILL_WEIGHTS.with(|buffer| -> Result<Vec<f32>> {
            let mut buffer = buffer.borrow_mut();
            if buffer.len() < n * k {
                buffer.resize(n * k, 0.0);
            }
            let w = &mut buffer[..n * k];
            packed::dequantize_stacked(&weights, w);
            let mut out = vec![0f32; m * n];
            dense_gemm(m, n, k, &input, w, &mut out);
            Ok(out)
        })?;
        let mut ys = Vec::with_capacity(layers.len());
        let mut column = 0;
        for (layer, w) in layers.iter().zip(&weights) {
            let rows = w.rows();
            let part: Vec<f32> = stacked
                .chunks_exact(n)
                .flat_map(|row| &row[column..column + rows])
                .copied()
                .collect();
            let mut shape = dims.clone();
            *shape.last_mut().expect("checked above") = rows;
            ys.push(layer.add_bias(Tensor::from_vec(part, shape, &Device::Cpu)?)?);
            column += rows;
        }
        Ok(Some(ys))
    }

    fn add_bias(&self, ys: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}

thread_local! {
    /// The expanded weights of [`Linear::prefill_expanded`], kept between products: a fresh
    /// 3.5 MB buffer per matrix was page-faulted in anew whenever the allocator had handed the
    /// previous one back to the system.
    static PREFILL_WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output columns (weight rows) per task of [`dense_gemm`]: a multiple of the f32 kernel's
/// 16 x 6 tile, and few enough tasks (12 for SmolLM2's 576 columns) that each one's packing
/// of `x` stays small next to its products.
const GEMM_COLUMNS: usize = 48;

/// `out = x Wᵀ` for row-major `x` (`[m, k]`) and `w` (`[n, k]`), with candle's GEMM (the `gemm`
/// crate), one block of [`GEMM_COLUMNS`] output columns per task over candle's barrier pool.
///
/// The barrier pool, not rayon (`gemm::Parallelism::Rayon`): candle's elementwise ops and our
/// expansion run on the barrier pool, whose worker spins a while (25 000 spin-loop hints) after
/// each of them before it parks. With the GEMM on rayon's threads, that spinning worker was a
/// third thread on two cores for about a millisecond after every such op (perf of pp128 at
/// 2 threads: 8% of the samples), taking a core from the GEMM. On the same pool, the worker
/// it spins on is the one the GEMM hands its next block to.
fn dense_gemm(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], out: &mut [f32]) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n);
    let pool = candle_core::utils::barrier_pool();
    let out = packed::SharedOut(out.as_mut_ptr());
    let columns = |tasks: std::ops::Range<usize>| {
        let (start, end) = (tasks.start * GEMM_COLUMNS, n.min(tasks.end * GEMM_COLUMNS));
        // SAFETY: `x`, `w` and `out` hold the shapes asserted above; `w`'s rows `start..end`
        // read as `[k, end - start]` with column stride `k` are their `Wᵀ`; the product goes
        // to columns `start..end` of `out` (row stride `n`), which no other task writes
        // (`execute_chunked` hands out disjoint task ranges and returns when all are done).
        unsafe {
            gemm::gemm(
                m,
                end - start,
                k,
                out.at(start),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr().add(start * k),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    let tasks = n.div_ceil(GEMM_COLUMNS);
    if pool.n_workers() == 0 {
        columns(0..tasks);
    } else {
        pool.execute_chunked(tasks, columns);
    }
}

/// `x Wᵀ` with a dense f32 `[out, in]` weight, for `x` of rank 2 to 4.
fn dense_matmul(xs: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = match *xs.dims() {
        [b1, b2, _, _] => w.broadcast_left((b1, b2))?.t()?,
        [bsize, _, _] => w.broadcast_left(bsize)?.t()?,
        _ => w.t()?,
    };
    xs.matmul(&w)
}

impl Module for Linear {
    /// A prompt chunk of at least [`DENSE_MIN_ROWS`] tokens takes the `prefill_weights` path;
    /// anything shorter the decode weights.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let rows = xs.elem_count() / xs.dim(candle_core::D::Minus1)?.max(1);
        if rows < DENSE_MIN_ROWS {
            return self.forward_decode(xs);
        }
        if let Some(mut ys) = Self::prefill_expanded(&[self], xs)? {
            return Ok(ys.pop().expect("one layer, one product"));
        }
        let ys = match &self.prefill {
            PrefillPath::SameAsDecode => self.weight.forward(xs)?,
            PrefillPath::F32Copy(w) => dense_matmul(xs, w)?,
            PrefillPath::Dequantize => dense_matmul(xs, &self.weight.dequantize()?)?,
        };
        self.add_bias(ys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x Wᵀ` in f64 by plain loops, `x` `[m, k]`, `w` `[n, k]`.
    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                    .sum();
                out[i * n + j] = dot as f32;
            }
        }
        out
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn an_expanded_prompt_chunk_equals_the_plain_product_of_the_stored_values() {
        if !q4_1::available() {
            return;
        }
        // Rows that are not whole row groups (70, 37) or tasks, a chunk of odd length above
        // DENSE_MIN_ROWS, and every format our kernels hold, fused three at a time.
        let (m, k) = (DENSE_MIN_ROWS + 3, 96);
        for format in [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q8_0] {
            let shapes = [70, 37, 128];
            let layers: Vec<Linear> = shapes
                .iter()
                .enumerate()
                .map(|(s, &rows)| {
                    let w = Tensor::from_vec(random(rows * k, s as u64), (rows, k), &Device::Cpu)
                        .unwrap();
                    Linear::from_f32(w, None, Some(format), PrefillWeights::Dequantize).unwrap()
                })
                .collect();
            assert!(layers.iter().all(|l| l.weight.packed().is_some()));
            let x = random(m * k, 99);
            let xs = Tensor::from_vec(x.clone(), (1, m, k), &Device::Cpu).unwrap();
            let ys = Linear::forward_all([&layers[0], &layers[1], &layers[2]], &xs).unwrap();
            for ((layer, y), &rows) in layers.iter().zip(&ys).zip(&shapes) {
                assert_eq!(y.dims(), [1, m, rows]);
                let w = layer.weight.dequantize().unwrap();
                let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(&x, &w, m, rows, k);
                // One layer alone takes the same path.
                let alone = layer.forward(&xs).unwrap();
                for got in [y, &alone] {
                    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    for (a, b) in got.iter().zip(&want) {
                        assert!(
                            (a - b).abs() < 1e-4 * b.abs().max(1.0),
                            "{format:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
