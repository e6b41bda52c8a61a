//! Named tensors from a GGUF file or from safetensors files, handed out in the chosen format.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{bail, Context, DType, Device, Result, Tensor};
use serde::Serialize;

use super::linear::Linear;
use super::precision::{fitting_format, format_name, PrefillWeights, WeightDtype};

/// Where the tensors are read from, the format asked for, and what the loader did.
pub struct Weights {
    source: Source,
    dtype: WeightDtype,
    prefill: PrefillWeights,
    formats: FormatLog,
}

enum Source {
    Gguf {
        content: gguf_file::Content,
        file: File,
    },
    Safetensors(MmapedSafetensors),
}

/// The format every weight matrix is multiplied in, by kind of matrix, and every matrix that
/// could not take the format asked for: the run's provenance (`weight_formats`,
/// `weight_fallbacks`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatLog {
    /// Matrix kind (the tensor name without its layer: `attn_q`, `self_attn.q_proj`, `output`)
    /// to format name to count.
    pub used: BTreeMap<String, BTreeMap<String, usize>>,
    /// Matrices that fell back, grouped by kind, format asked for and format used.
    pub fallbacks: Vec<Fallback>,
    /// Bytes of the f32 copies kept for prompt chunks (`prefill_weights = "f32_copy"`).
    pub prefill_copy_bytes: usize,
}

/// Matrices of one kind that could not take the format asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fallback {
    pub matrices: String,
    pub count: usize,
    pub requested: String,
    pub used: String,
    /// Values per row: what the requested format's blocks do not divide.
    pub row_values: usize,
    pub requested_block: usize,
}

impl FormatLog {
    fn record(&mut self, kind: &str, linear: &Linear) {
        self.prefill_copy_bytes += linear.prefill_copy_bytes();
        let used = linear.format();
        *self
            .used
            .entry(kind.to_string())
            .or_default()
            .entry(format_name(used))
            .or_default() += 1;
    }

    fn record_fallback(
        &mut self,
        kind: &str,
        requested: GgmlDType,
        used: Option<GgmlDType>,
        row_values: usize,
    ) {
        let (requested_name, used_name) = (format_name(Some(requested)), format_name(used));
        if let Some(f) = self.fallbacks.iter_mut().find(|f| {
            f.matrices == kind
                && f.requested == requested_name
                && f.used == used_name
                && f.row_values == row_values
        }) {
            f.count += 1;
            return;
        }
        self.fallbacks.push(Fallback {
            matrices: kind.to_string(),
            count: 1,
            requested: requested_name,
            used: used_name,
            row_values,
            requested_block: requested.block_size(),
        });
    }

    /// One sentence for the terminal naming every fallback, or `None` when there was none.
    pub fn fallback_summary(&self) -> Option<String> {
        if self.fallbacks.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .fallbacks
            .iter()
            .map(|f| {
                format!(
                    "{} {} → {} ({}-value rows, {}-value {} blocks)",
                    f.count, f.matrices, f.used, f.row_values, f.requested_block, f.requested
                )
            })
            .collect();
        Some(format!(
            "weight matrices whose rows the requested format's blocks do not divide fell back: {}",
            parts.join("; ")
        ))
    }
}

/// The kind of a weight matrix: its tensor name without the layer prefix and the `.weight`
/// suffix (`blk.3.attn_q.weight` is `attn_q`, `model.layers.3.mlp.up_proj.weight` is
/// `mlp.up_proj`).
pub fn matrix_kind(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let start = parts
        .iter()
        .rposition(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, |i| i + 1);
    let end = if parts.last() == Some(&"weight") {
        parts.len() - 1
    } else {
        parts.len()
    };
    parts[start..end.max(start)].join(".")
}

impl Weights {
    /// Opens a GGUF file and reads its header (metadata and tensor index).
    pub fn open_gguf(path: &Path, dtype: WeightDtype, prefill: PrefillWeights) -> Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
        let content = gguf_file::Content::read(&mut file).with_context(|| {
            format!(
                "`{}` is not a readable GGUF file (truncated or corrupt?); download it again",
                path.display()
            )
        })?;
        Ok(Weights {
            source: Source::Gguf { content, file },
            dtype,
            prefill,
            formats: FormatLog::default(),
        })
    }

    /// Maps safetensors files into memory.
    pub fn open_safetensors(
        paths: &[PathBuf],
        dtype: WeightDtype,
        prefill: PrefillWeights,
    ) -> Result<Self> {
        // SAFETY: the files are only read; the mapping lives as long as `Weights` and the model
        // copies every tensor out of it at load time.
        let tensors = unsafe { MmapedSafetensors::multi(paths) }.with_context(|| {
            format!(
                "cannot read the safetensors files {paths:?} (truncated or corrupt?); download them again"
            )
        })?;
        Ok(Weights {
            source: Source::Safetensors(tensors),
            dtype,
            prefill,
            formats: FormatLog::default(),
        })
    }

    /// The GGUF metadata (empty for safetensors).
    pub fn metadata(&self) -> Option<&std::collections::HashMap<String, gguf_file::Value>> {
        self.gguf_content().map(|c| &c.metadata)
    }

    /// The whole GGUF header (tokenizer vocabulary included).
    pub fn gguf_content(&self) -> Option<&gguf_file::Content> {
        match &self.source {
            Source::Gguf { content, .. } => Some(content),
            Source::Safetensors(_) => None,
        }
    }

    /// What the loader did with every weight matrix so far.
    pub fn formats(&self) -> &FormatLog {
        &self.formats
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            Source::Safetensors(tensors) => tensors.get(name).is_ok(),
        }
    }

    /// The first of `names` that the file holds, so one loader serves several naming schemes.
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.contains(n))
    }

    /// A tensor as f32 (dequantized if stored quantized): norms, biases, embeddings.
    pub fn f32(&mut self, name: &str) -> Result<Tensor> {
        match &mut self.source {
            Source::Gguf { content, file } => content
                .tensor(file, name, &Device::Cpu)
                .with_context(|| missing(name))?
                .dequantize(&Device::Cpu),
            Source::Safetensors(tensors) => tensors
                .load(name, &Device::Cpu)
                .with_context(|| missing(name))?
                .to_dtype(DType::F32),
        }
    }

    /// A dense layer from a weight stored `[out, in]` (`transposed`: stored `[in, out]`, as
    /// GPT-2's Conv1D does) and an optional bias; recorded under the tensor name's kind.
    pub fn linear(&mut self, weight: &str, bias: Option<&str>, transposed: bool) -> Result<Linear> {
        self.linear_as(&matrix_kind(weight), weight, bias, transposed)
    }

    /// The output head, recorded under `kind` (a head tied to the embedding is the `output`,
    /// not the `token_embd`). It keeps no prefill copy: a prefill runs it on the last position
    /// alone, so it always takes the decode path.
    pub fn output_head(&mut self, kind: &str, weight: &str) -> Result<Linear> {
        self.linear_with(kind, weight, None, false, PrefillWeights::Quantized)
    }

    fn linear_as(
        &mut self,
        kind: &str,
        weight: &str,
        bias: Option<&str>,
        transposed: bool,
    ) -> Result<Linear> {
        self.linear_with(kind, weight, bias, transposed, self.prefill)
    }

    fn linear_with(
        &mut self,
        kind: &str,
        weight: &str,
        bias: Option<&str>,
        transposed: bool,
        prefill: PrefillWeights,
    ) -> Result<Linear> {
        let bias = match bias {
            Some(b) => Some(self.f32(b)?),
            None => None,
        };
        let (requested, w) = match &mut self.source {
            Source::Gguf { content, file } => {
                let q = content
                    .tensor(file, weight, &Device::Cpu)
                    .with_context(|| missing(weight))?;
                if transposed {
                    bail!("transposed GGUF weights are not supported ({weight})");
                }
                let requested = self.dtype.target(q.dtype());
                if requested == Some(q.dtype()) {
                    let linear = Linear::from_qtensor(q, bias, prefill)?;
                    self.formats.record(kind, &linear);
                    return Ok(linear);
                }
                (requested, q.dequantize(&Device::Cpu)?)
            }
            Source::Safetensors(tensors) => {
                let mut w = tensors
                    .load(weight, &Device::Cpu)
                    .with_context(|| missing(weight))?
                    .to_dtype(DType::F32)?;
                if transposed {
                    w = w.t()?.contiguous()?;
                }
                (self.dtype.target_for_float(), w)
            }
        };
        let format = match requested {
            Some(wanted) => {
                let row_values = w.dim(1)?;
                let fitting = fitting_format(wanted, row_values);
                if fitting != Some(wanted) {
                    self.formats
                        .record_fallback(kind, wanted, fitting, row_values);
                }
                fitting
            }
            None => None,
        };
        let linear = Linear::from_f32(w, bias, format, prefill)?;
        self.formats.record(kind, &linear);
        Ok(linear)
    }
}

fn missing(name: &str) -> String {
    format!("tensor `{name}` is missing or unreadable; is this a complete model of the architecture its config names?")
}

/// Reads a GGUF metadata value as an unsigned integer.
pub fn meta_usize(
    meta: &std::collections::HashMap<String, gguf_file::Value>,
    key: &str,
) -> Result<usize> {
    let v = meta
        .get(key)
        .with_context(|| format!("GGUF metadata `{key}` is missing"))?;
    use gguf_file::Value::*;
    Ok(match v {
        U8(x) => *x as usize,
        U16(x) => *x as usize,
        U32(x) => *x as usize,
        U64(x) => *x as usize,
        I32(x) if *x >= 0 => *x as usize,
        I64(x) if *x >= 0 => *x as usize,
        other => bail!("GGUF metadata `{key}` is {other:?}, expected a non-negative integer"),
    })
}

/// Reads a GGUF metadata value as a float, or `default` when absent.
pub fn meta_f32_or(
    meta: &std::collections::HashMap<String, gguf_file::Value>,
    key: &str,
    default: f32,
) -> Result<f32> {
    match meta.get(key) {
        None => Ok(default),
        Some(v) => v
            .to_f32()
            .with_context(|| format!("GGUF metadata `{key}` is not a float")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_kind_is_its_name_without_layer_and_suffix() {
        assert_eq!(matrix_kind("blk.3.attn_q.weight"), "attn_q");
        assert_eq!(
            matrix_kind("model.layers.12.mlp.up_proj.weight"),
            "mlp.up_proj"
        );
        assert_eq!(matrix_kind("h.0.attn.c_attn.weight"), "attn.c_attn");
        assert_eq!(matrix_kind("lm_head.weight"), "lm_head");
        assert_eq!(matrix_kind("output"), "output");
    }

    #[test]
    fn fallbacks_are_grouped_and_summarised_once() {
        let mut log = FormatLog::default();
        for _ in 0..3 {
            log.record_fallback("attn_q", GgmlDType::Q4K, Some(GgmlDType::Q5_0), 576);
        }
        log.record_fallback("ffn_up", GgmlDType::Q4K, Some(GgmlDType::Q5_0), 576);
        assert_eq!(log.fallbacks.len(), 2);
        assert_eq!(log.fallbacks[0].count, 3);
        let summary = log.fallback_summary().unwrap();
        assert!(
            summary.contains("3 attn_q → q5_0 (576-value rows, 256-value q4k blocks)"),
            "{summary}"
        );
        assert_eq!(FormatLog::default().fallback_summary(), None);
    }
}
