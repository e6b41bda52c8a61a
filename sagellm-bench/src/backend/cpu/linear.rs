//! A dense layer whose weight may be quantized: `y = x Wᵀ + b`.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Result, Tensor};

/// The weight (`[out, in]`) in the format chosen at load time, and an optional f32 bias.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
    weight_bytes: usize,
}

impl Linear {
    /// Builds from an f32 `[out, in]` weight, quantizing it to `format` when given. A matrix
    /// whose rows are not a whole number of quantization blocks stays f32.
    pub fn from_f32(
        weight: Tensor,
        bias: Option<Tensor>,
        format: Option<GgmlDType>,
    ) -> Result<Self> {
        let in_features = weight.dim(1)?;
        match format {
            Some(format) if in_features % format.block_size() == 0 => {
                let q = QTensor::quantize(&weight, format)?;
                Ok(Self::from_qtensor(q, bias))
            }
            _ => {
                let weight_bytes = weight.elem_count() * 4;
                Ok(Linear {
                    weight: QMatMul::Tensor(weight),
                    bias,
                    weight_bytes,
                })
            }
        }
    }

    /// Builds from a quantized weight kept as it is.
    pub fn from_qtensor(weight: QTensor, bias: Option<Tensor>) -> Self {
        let weight_bytes = weight.storage_size_in_bytes();
        Linear {
            weight: QMatMul::QTensor(std::sync::Arc::new(weight)),
            bias,
            weight_bytes,
        }
    }

    /// Bytes of the weight as held in memory (read once per forward pass).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.weight.forward(xs)?;
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}
