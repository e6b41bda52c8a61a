//! Which number format the weights are multiplied in: `--dtype`.

use candle_core::quantized::GgmlDType;
use serde::{Deserialize, Serialize};

/// The weight format chosen on the command line or in the `[cpu]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    /// GGUF: keep formats candle has fast kernels for, convert the others (Q4_1, Q5_x, ...) to
    /// Q8_0, which keeps greedy output faithful. Safetensors: f32.
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
                    // candle's CPU kernels for these are vectorised (and repacked for decode).
                    GgmlDType::Q4_0 | GgmlDType::Q8_0 | GgmlDType::Q4K | GgmlDType::Q6K => {
                        Some(stored)
                    }
                    // Q4_1, Q5_0, Q5_1, Q2K, Q3K, Q5K, Q8_1, Q8K: scalar or slower paths;
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
