//! Named tensors from a GGUF file or from safetensors files, handed out in the chosen format.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{bail, Context, DType, Device, Result, Tensor};

use super::linear::Linear;
use super::precision::WeightDtype;

/// Where the tensors are read from.
pub enum Weights {
    Gguf {
        content: gguf_file::Content,
        file: File,
        dtype: WeightDtype,
    },
    Safetensors {
        tensors: MmapedSafetensors,
        dtype: WeightDtype,
    },
}

impl Weights {
    /// Opens a GGUF file and reads its header (metadata and tensor index).
    pub fn open_gguf(path: &Path, dtype: WeightDtype) -> Result<Self> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
        let content = gguf_file::Content::read(&mut file).with_context(|| {
            format!(
                "`{}` is not a readable GGUF file (truncated or corrupt?); download it again",
                path.display()
            )
        })?;
        Ok(Weights::Gguf {
            content,
            file,
            dtype,
        })
    }

    /// Maps safetensors files into memory.
    pub fn open_safetensors(paths: &[PathBuf], dtype: WeightDtype) -> Result<Self> {
        // SAFETY: the files are only read; the mapping lives as long as `Weights` and the model
        // copies every tensor out of it at load time.
        let tensors = unsafe { MmapedSafetensors::multi(paths) }.with_context(|| {
            format!(
                "cannot read the safetensors files {paths:?} (truncated or corrupt?); download them again"
            )
        })?;
        Ok(Weights::Safetensors { tensors, dtype })
    }

    /// The GGUF metadata (empty for safetensors).
    pub fn metadata(&self) -> Option<&std::collections::HashMap<String, gguf_file::Value>> {
        match self {
            Weights::Gguf { content, .. } => Some(&content.metadata),
            Weights::Safetensors { .. } => None,
        }
    }

    /// The whole GGUF header (tokenizer vocabulary included).
    pub fn gguf_content(&self) -> Option<&gguf_file::Content> {
        match self {
            Weights::Gguf { content, .. } => Some(content),
            Weights::Safetensors { .. } => None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Weights::Gguf { content, .. } => content.tensor_infos.contains_key(name),
            Weights::Safetensors { tensors, .. } => tensors.get(name).is_ok(),
        }
    }

    /// The first of `names` that the file holds, so one loader serves several naming schemes.
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.contains(n))
    }

    /// A tensor as f32 (dequantized if stored quantized): norms, biases, embeddings.
    pub fn f32(&mut self, name: &str) -> Result<Tensor> {
        match self {
            Weights::Gguf { content, file, .. } => content
                .tensor(file, name, &Device::Cpu)
                .with_context(|| missing(name))?
                .dequantize(&Device::Cpu),
            Weights::Safetensors { tensors, .. } => tensors
                .load(name, &Device::Cpu)
                .with_context(|| missing(name))?
                .to_dtype(DType::F32),
        }
    }

    /// A dense layer from a weight stored `[out, in]` (`transposed`: stored `[in, out]`, as
    /// GPT-2's Conv1D does) and an optional bias.
    pub fn linear(&mut self, weight: &str, bias: Option<&str>, transposed: bool) -> Result<Linear> {
        let bias = match bias {
            Some(b) => Some(self.f32(b)?),
            None => None,
        };
        match self {
            Weights::Gguf {
                content,
                file,
                dtype,
            } => {
                let q = content
                    .tensor(file, weight, &Device::Cpu)
                    .with_context(|| missing(weight))?;
                if transposed {
                    bail!("transposed GGUF weights are not supported ({weight})");
                }
                match dtype.target(q.dtype()) {
                    Some(format) if format == q.dtype() => Ok(Linear::from_qtensor(q, bias)),
                    format => Linear::from_f32(q.dequantize(&Device::Cpu)?, bias, format),
                }
            }
            Weights::Safetensors { tensors, dtype } => {
                let mut w = tensors
                    .load(weight, &Device::Cpu)
                    .with_context(|| missing(weight))?
                    .to_dtype(DType::F32)?;
                if transposed {
                    w = w.t()?.contiguous()?;
                }
                Linear::from_f32(w, bias, dtype.target_for_float())
            }
        }
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
