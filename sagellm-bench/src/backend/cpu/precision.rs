//! Which number format the weights are multiplied in: `--dtype`.

use candle_core::quantized::GgmlDType;
use serde::{Deserialize, Serialize};

/// The weight format chosen on the command line or in the `[cpu]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    /// GGUF: keep formats with fast kernels here (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K), convert
    /// the others (Q5_1, Q2_K, ...) to Q8_0. Safetensors: f32.
    #[default]
    Auto,
    /// Keep every GGUF tensor exactly as stored (safetensors: f32).
    Keep,
    /// Dequantize everything to f32: slowest, and the exact reference.
    F32,
    Q8_0,
    Q4_0,
    Q4k,
    Q6k,
}

impl WeightDtype {
    pub const NAMES: &'static [&'static str] =
        &["auto", "keep", "f32", "q8_0", "q4_0", "q4k", "q6k"];

    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "auto" => WeightDtype::Auto,
            "keep" => WeightDtype::Keep,
            "f32" => WeightDtype::F32,
            "q8_0" => WeightDtype::Q8_0,
            "q4_0" => WeightDtype::Q4_0,
            "q4k" | "q4_k" => WeightDtype::Q4k,
            "q6k" | "q6_k" => WeightDtype::Q6k,
            other => {
                return Err(format!(
                    "unknown --dtype `{other}`; choose one of: {}",
                    Self::NAMES.join(", ")
                ))
            }
        })
    }

    /// The format a matrix stored as `stored` is multiplied in (`None`: dequantized f32).
    pub fn target(self, stored: GgmlDType) -> Option<GgmlDType> {
        let fixed = match self {
            WeightDtype::Keep => return float_as_none(stored),
            WeightDtype::F32 => return None,
            WeightDtype::Q8_0 => GgmlDType::Q8_0,
            WeightDtype::Q4_0 => GgmlDType::Q4_0,
            WeightDtype::Q4k => GgmlDType::Q4K,
            WeightDtype::Q6k => GgmlDType::Q6K,
            WeightDtype::Auto => {
                return match stored {
                    GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => None,
                    // candle's CPU kernels for these are vectorised (and repacked for decode);
                    // Q8_0, Q4_1 and Q5_0 have ours (backend/cpu/q8.rs, q4_1.rs, q5_0.rs). Kept as stored, a
                    // matrix multiplies exactly the values the file holds.
                    GgmlDType::Q4_0 | GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K => {
                        Some(stored)
                    }
                    GgmlDType::Q4_1 if super::q4_1::available() => Some(stored),
                    GgmlDType::Q5_0 if super::q5_0::available() => Some(stored),
                    // Q5_1, Q2K, Q3K, Q5K, Q8_1, Q8K (and Q4_1, Q5_0 without AVX2): scalar paths;
                    // Q8_0 holds their values with an error far below their own.
                    _ => Some(GgmlDType::Q8_0),
                };
            }
        };
        Some(fixed)
    }

    /// The format a float (safetensors) matrix is multiplied in (`None`: f32).
    pub fn target_for_float(self) -> Option<GgmlDType> {
        match self {
            WeightDtype::Auto | WeightDtype::Keep | WeightDtype::F32 => None,
            other => other.target(GgmlDType::F32),
        }
    }
}

fn float_as_none(stored: GgmlDType) -> Option<GgmlDType> {
    match stored {
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => None,
        other => Some(other),
    }
}

/// The format a matrix whose rows hold `row_len` values is multiplied in when `wanted` was asked
/// for (`None`: f32). A format whose blocks do not divide the rows cannot hold the matrix; then
/// the matrix falls back the way llama-quantize falls back (`llama_tensor_get_type` in
/// llama.cpp's `src/llama-quant.cpp`), to a 32-value format of about the same precision: Q4_K to
/// Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and Q2_K and Q3_K to Q4_0 (llama-quantize picks IQ4_NL,
/// which candle does not have; Q4_0 is its 32-value 4-bit neighbour). A row that no 32-value
/// block divides either stays f32 (llama-quantize: f16), and says so like every fallback.
pub fn fitting_format(wanted: GgmlDType, row_len: usize) -> Option<GgmlDType> {
    let fits = |format: GgmlDType| row_len % format.block_size() == 0;
    if fits(wanted) {
        return Some(wanted);
    }
    let smaller_blocks = match wanted {
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K | GgmlDType::Q8K => GgmlDType::Q8_0,
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        // Already 32-value blocks (or a float): nothing smaller but f32.
        _ => return None,
    };
    fits(smaller_blocks).then_some(smaller_blocks)
}

/// A format's name as `--dtype` and the provenance spell it: `q4k`, `q8_0`, `f32`.
pub fn format_name(format: Option<GgmlDType>) -> String {
    match format {
        None => "f32".to_string(),
        Some(f) => format!("{f:?}").to_ascii_lowercase(),
    }
}

/// Which weights prompt chunks (prefill) are multiplied with: `[cpu] prefill_weights`. Decode
/// always multiplies the weights in the `--dtype` format; this only changes prompt chunks of at
/// least [`super::linear::DENSE_MIN_ROWS`] tokens, and only for quantized matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrefillWeights {
    /// An f32 copy of every quantized matrix, kept beside it, multiplied with candle's f32 GEMM:
    /// 4 bytes per weight more memory (SmolLM2-135M: 425 MB), prefill at f32 speed.
    F32Copy,
    /// Each quantized matrix dequantized to f32 when a prompt chunk needs it, then the f32 GEMM:
    /// no copy kept (one reused expansion buffer, docs/CPU.md), the dequantization paid once
    /// per chunk per matrix.
    #[default]
    Dequantize,
    /// The decode kernel on the whole chunk (ours for Q8_0 and Q4_1, which reuses each group
    /// of four weight rows for every token of the chunk; candle's for the other formats).
    Quantized,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_that_does_not_fit_falls_back_as_llama_quantize_does() {
        // SmolLM2's 576-value rows: 2.25 K-blocks, 18 32-value blocks.
        assert_eq!(fitting_format(GgmlDType::Q4K, 576), Some(GgmlDType::Q5_0));
        assert_eq!(fitting_format(GgmlDType::Q6K, 576), Some(GgmlDType::Q8_0));
        assert_eq!(fitting_format(GgmlDType::Q5K, 576), Some(GgmlDType::Q5_1));
        assert_eq!(fitting_format(GgmlDType::Q3K, 576), Some(GgmlDType::Q4_0));
        // Its 1536-value rows (the down projection) hold whole K-blocks.
        assert_eq!(fitting_format(GgmlDType::Q4K, 1536), Some(GgmlDType::Q4K));
        assert_eq!(fitting_format(GgmlDType::Q8_0, 576), Some(GgmlDType::Q8_0));
        // No 32-value block divides 100 values: f32, said as a fallback by the loader.
        assert_eq!(fitting_format(GgmlDType::Q4K, 100), None);
        assert_eq!(fitting_format(GgmlDType::Q8_0, 100), None);
    }

    #[test]
    fn format_names_are_the_dtype_spellings() {
        assert_eq!(format_name(Some(GgmlDType::Q4K)), "q4k");
        assert_eq!(format_name(Some(GgmlDType::Q8_0)), "q8_0");
        assert_eq!(format_name(None), "f32");
        for name in ["q8_0", "q4_0", "q4k", "q6k"] {
            let dtype = WeightDtype::parse(name).unwrap();
            assert_eq!(format_name(dtype.target(GgmlDType::F32)), name);
        }
    }
}
