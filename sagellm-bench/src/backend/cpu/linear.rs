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
    /// Q4_1, repacked for our kernel (backend/cpu/q4_1.rs), where the CPU runs it.
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
        let weight = if weight.dtype() == GgmlDType::Q8_0
            && q8::available()
            && !q8::candle_tiles_q8_0(out_features, in_features)
        {
            // Repacked, and candle's copy dropped: the kernel reads only the repacked blocks.
            DecodeWeight::Q8(Arc::new(PackedQ8::from_qtensor(&weight)?))
        } else if weight.dtype() == GgmlDType::Q4_1 && q4_1::available() {
            DecodeWeight::Q4_1(Arc::new(PackedQ4_1::from_qtensor(&weight)?))
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
        let ys = layers
            .iter()
            .map(|l| l.forward(xs))
            .collect::<Result<Vec<_>>>()?;
        ys.try_into()
            .map_err(|_| candle_core::Error::Msg("one product per layer".into()))
    }

    fn add_bias(&self, ys: Tensor) -> Result<Tensor> {
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
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
        let ys = match &self.prefill {
            PrefillPath::SameAsDecode => self.weight.forward(xs)?,
            PrefillPath::F32Copy(w) => dense_matmul(xs, w)?,
            PrefillPath::Dequantize => dense_matmul(xs, &self.weight.dequantize()?)?,
        };
        self.add_bias(ys)
    }
}
