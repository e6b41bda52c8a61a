//! Builds a runnable model and its tokenizer from the files `--model` names.

use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;

use super::gpt2::{Gpt2, Gpt2Config};
use super::llama::{HfLlamaConfig, Llama};
use super::model::CausalLm;
use super::opt::{Opt, OptConfig};
use super::precision::{PrefillWeights, WeightDtype};
use super::source::ModelFiles;
use super::text::TextCodec;
use super::weights::{FormatLog, Weights};

/// A model ready to run.
pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub codec: TextCodec,
    /// The format each weight matrix is multiplied in, and the fallbacks.
    pub formats: FormatLog,
}

/// How the weights are held: the format decode multiplies them in, and what prompt chunks use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub dtype: WeightDtype,
    pub prefill: PrefillWeights,
}

/// Loads the model in `files`, its weights held as `options` say.
pub fn load(files: &ModelFiles, options: LoadOptions) -> Result<LoadedModel, String> {
    match files {
        ModelFiles::Gguf(path) => {
            load_gguf(path, options).map_err(|e| format!("cannot load `{}`: {e}", path.display()))
        }
        ModelFiles::Folder {
            config,
            weights,
            tokenizer,
        } => load_folder(config, weights, tokenizer, options).map_err(|e| {
            let dir = config
                .parent()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            format!("cannot load the model in `{dir}`: {e}")
        }),
    }
}

fn load_gguf(path: &std::path::Path, options: LoadOptions) -> Result<LoadedModel, String> {
    let mut weights =
        Weights::open_gguf(path, options.dtype, options.prefill).map_err(|e| candle_message(&e))?;
    let content = weights.gguf_content().ok_or("not a GGUF file")?;
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or("GGUF metadata `general.architecture` is missing")?;
    let mut tokenizer = Tokenizer::from_gguf(content)
        .map_err(|e| format!("cannot build the tokenizer from the GGUF metadata: {e}"))?;
    without_prefix_space(&mut tokenizer, content);
    let eos = content
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
        .into_iter()
        .collect();
    let model: Box<dyn CausalLm> = match arch.as_str() {
        "llama" => Box::new(Llama::from_gguf(&mut weights).map_err(|e| candle_message(&e))?),
        other => {
            return Err(format!(
                "unsupported architecture `{other}` in the GGUF file; the cpu backend runs llama-family GGUF files (Llama, SmolLM, TinyLlama) and GPT-2, OPT and llama model folders"
            ))
        }
    };
    Ok(LoadedModel {
        model,
        codec: TextCodec::new(tokenizer, eos),
        formats: weights.formats().clone(),
    })
}

/// candle builds byte-level BPE tokenizers for the GPT-2-style `tokenizer.ggml.pre` values
/// (`gpt2`, `smollm`, ...) with GPT-2's `add_prefix_space = true`, so "The" at the start of a
/// prompt becomes "ĠThe". llama.cpp and the models' own tokenizer.json add no prefix space unless
/// `tokenizer.ggml.add_space_prefix` says so; this restores that.
fn without_prefix_space(
    tokenizer: &mut Tokenizer,
    content: &candle_core::quantized::gguf_file::Content,
) {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::PreTokenizerWrapper;
    let add_space = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    if let Some(PreTokenizerWrapper::ByteLevel(level)) = tokenizer.get_pre_tokenizer() {
        if level.add_prefix_space != add_space {
            let fixed = ByteLevel::new(add_space, level.trim_offsets, level.use_regex);
            tokenizer.with_pre_tokenizer(Some(fixed));
        }
    }
}

/// A candle error as one readable message: its contexts first, the cause last, and no
/// backtrace (candle captures one whenever `RUST_BACKTRACE` is set, which is for our bugs, not
/// for a user's corrupt file).
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WrappedContext { wrapped, context } => format!("{context}: {wrapped}"),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    }
}

fn load_folder(
    config_path: &std::path::Path,
    weight_paths: &[std::path::PathBuf],
    tokenizer_path: &std::path::Path,
    options: LoadOptions,
) -> Result<LoadedModel, String> {
    let text = crate::workload::input::read_to_string(config_path)
        .map_err(|e| format!("cannot read config.json: {e}"))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("config.json is not valid JSON: {e}"))?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .ok_or("config.json has no `model_type`")?
        .to_string();
    let unsupported = |model_type: &str| {
        format!(
            "unsupported architecture `{model_type}` (config.json model_type); the cpu backend runs llama, gpt2 and opt model folders and llama-family GGUF files"
        )
    };
    if !["llama", "gpt2", "opt"].contains(&model_type.as_str()) {
        // Said before anything else is read: the other files cannot make it work.
        return Err(unsupported(&model_type));
    }
    let parse_err =
        |e: serde_json::Error| format!("config.json does not describe a {model_type} model: {e}");
    let tokenizer = Tokenizer::from_file(tokenizer_path)
        .map_err(|e| format!("cannot read tokenizer.json: {e}"))?;
    let eos = eos_ids(&config);
    let mut weights = Weights::open_safetensors(weight_paths, options.dtype, options.prefill)
        .map_err(|e| candle_message(&e))?;
    let model: Box<dyn CausalLm> = match model_type.as_str() {
        "llama" => {
            let c: HfLlamaConfig = serde_json::from_value(config).map_err(parse_err)?;
            Box::new(Llama::from_safetensors(&c, &mut weights).map_err(|e| candle_message(&e))?)
        }
        "gpt2" => {
            let c: Gpt2Config = serde_json::from_value(config).map_err(parse_err)?;
            Box::new(Gpt2::from_safetensors(&c, &mut weights).map_err(|e| candle_message(&e))?)
        }
        "opt" => {
            let c: OptConfig = serde_json::from_value(config).map_err(parse_err)?;
            Box::new(Opt::from_safetensors(&c, &mut weights).map_err(|e| candle_message(&e))?)
        }
        other => return Err(unsupported(other)),
    };
    Ok(LoadedModel {
        model,
        codec: TextCodec::new(tokenizer, eos),
        formats: weights.formats().clone(),
    })
}

/// `eos_token_id` of config.json: a number or a list of numbers.
fn eos_ids(config: &serde_json::Value) -> Vec<u32> {
    match config.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}
