//! Which backend to build, with its settings: the one place a backend is constructed, for the
//! CLI and `cargo bench` alike.

use std::sync::Arc;

#[cfg(feature = "cpu")]
use crate::backend::cpu::{CpuBackend, CpuConfig};
use crate::backend::guard::{panic_text, Guarded, Limits};
use crate::backend::mock::{MockBackend, MockConfig};
#[cfg(feature = "openai")]
use crate::backend::openai::{OpenAiBackend, OpenAiConfig};
use crate::backend::registered::{registered, RegisteredBackend};
use crate::backend::{Backend, BackendError};

/// The backends by the name `--backend` takes. Every one is listed whatever the features, so
/// naming one that is compiled out says which feature it needs instead of "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Simulated engine on a virtual clock: no GPU, instant, deterministic
    Mock,
    /// CPU inference with candle: a GGUF file, a Hugging Face folder or hub id (--model)
    Cpu,
    /// Any OpenAI-compatible streaming server (TGI, Ollama, ...); see --base-url
    Openai,
    /// vLLM's OpenAI-compatible server (default http://127.0.0.1:8000)
    Vllm,
    /// LMDeploy's api_server (default http://127.0.0.1:23333)
    Lmdeploy,
    /// SGLang's server (default http://127.0.0.1:30000)
    Sglang,
    /// llama.cpp's llama-server (default http://127.0.0.1:8080)
    Llamacpp,
}

impl BackendKind {
    /// The name as `--backend` spells it, e.g. `vllm`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Mock => "mock",
            BackendKind::Cpu => "cpu",
            BackendKind::Openai => "openai",
            BackendKind::Vllm => "vllm",
            BackendKind::Lmdeploy => "lmdeploy",
            BackendKind::Sglang => "sglang",
            BackendKind::Llamacpp => "llamacpp",
        }
    }

    /// True for the OpenAI-compatible servers (each a preset of the openai backend).
    pub fn is_server(self) -> bool {
        !matches!(self, BackendKind::Mock | BackendKind::Cpu)
    }

    /// The cargo feature this backend is compiled with, if it needs one.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            BackendKind::Mock => None,
            BackendKind::Cpu => Some("cpu"),
            _ => Some("openai"),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend as `--backend` names it: a built-in one, or one a crate registered with
/// `#[sagellm_bench::backend]`.
#[derive(Debug, Clone, Copy)]
pub enum BackendName {
    /// One of the backends this crate ships.
    Builtin(BackendKind),
    /// A backend registered by the crate being benchmarked.
    Registered(&'static RegisteredBackend),
}

impl BackendName {
    /// The built-in backend it is, if it is one.
    pub fn kind(&self) -> Option<BackendKind> {
        match self {
            BackendName::Builtin(kind) => Some(*kind),
            BackendName::Registered(_) => None,
        }
    }

    /// The name as `--backend` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendName::Builtin(kind) => kind.name(),
            BackendName::Registered(entry) => entry.name,
        }
    }

    /// True for the OpenAI-compatible servers.
    pub fn is_server(&self) -> bool {
        self.kind().is_some_and(BackendKind::is_server)
    }

    /// The backend called `name`: a built-in one first, then a registered one.
    pub fn find(name: &str) -> Option<BackendName> {
        use clap::ValueEnum;
        if let Ok(kind) = BackendKind::from_str(name, false) {
            return Some(BackendName::Builtin(kind));
        }
        registered()
            .into_iter()
            .find(|b| b.name == name)
            .map(BackendName::Registered)
    }

    /// The parser of `--backend`: the built-in names with their help, then every registered
    /// one, so `--help` and the "possible values" of an error list them all.
    pub fn parser() -> impl clap::builder::TypedValueParser<Value = BackendName> {
        use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
        use clap::ValueEnum;
        let mut values: Vec<PossibleValue> = BackendKind::value_variants()
            .iter()
            .filter_map(ValueEnum::to_possible_value)
            .collect();
        values.extend(registered().into_iter().map(|b| {
            PossibleValue::new(b.name).help(format!("registered at {}:{}", b.file, b.line))
        }));
        PossibleValuesParser::new(values)
            .map(|name| BackendName::find(&name).expect("the parser offers only names it can find"))
    }

    /// The parser of `compare`'s `--backend`: the server presets only, the one kind a
    /// `--target NAME=URL` can be, so `--help` offers nothing that `compare` then refuses.
    pub fn server_parser() -> impl clap::builder::TypedValueParser<Value = BackendName> {
        use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
        use clap::ValueEnum;
        let values: Vec<PossibleValue> = BackendKind::value_variants()
            .iter()
            .filter(|kind| kind.is_server())
            .filter_map(ValueEnum::to_possible_value)
            .collect();
        PossibleValuesParser::new(values)
            .map(|name| BackendName::find(&name).expect("the parser offers only names it can find"))
    }
}

impl PartialEq for BackendName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for BackendName {}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks the registered backends' names: unique, and none taking a built-in one's.
pub fn check_registered() -> Result<(), String> {
    use clap::ValueEnum;
    let all = registered();
    for (i, b) in all.iter().enumerate() {
        if BackendKind::from_str(b.name, false).is_ok() {
            return Err(format!(
                "the #[backend] at {}:{} is named `{}`, a built-in backend's name; give it another with name = \"...\"",
                b.file, b.line, b.name
            ));
        }
        if let Some(twin) = all[i + 1..].iter().find(|o| o.name == b.name) {
            return Err(format!(
                "two #[backend]s are named `{}` ({}:{} and {}:{}); give one a name = \"...\"",
                b.name, b.file, b.line, twin.file, twin.line
            ));
        }
    }
    Ok(())
}

/// A backend to build, with everything it needs.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// The simulated engine; `model` only names the model in the results.
    Mock {
        /// The engine's parameters (the config file's `[mock]` table).
        config: MockConfig,
        /// The model name to record.
        model: Option<String>,
    },
    /// A model run in this process with candle.
    #[cfg(feature = "cpu")]
    Cpu {
        /// A GGUF file, a Hugging Face folder or a hub id.
        model: String,
        /// Weight format, threads, sampling (the `[cpu]` table, `--dtype`, `--threads`).
        config: CpuConfig,
    },
    /// An OpenAI-compatible server, through the preset `kind` names.
    #[cfg(feature = "openai")]
    Server {
        /// Which preset: its default address and metric names.
        kind: BackendKind,
        /// Address, model, timeouts, metrics and the rest.
        config: OpenAiConfig,
    },
    /// A backend the crate being benchmarked registered, kept to the stream contract by
    /// [`Guarded`] with these limits.
    Registered {
        /// Its registration.
        entry: &'static RegisteredBackend,
        /// The request and stall timeouts (`--request-timeout`, `--stall-timeout`).
        limits: Limits,
    },
}

impl BackendSpec {
    /// Builds the backend: the mock at once, the cpu backend by loading its model, a server
    /// backend by checking its settings (and asking `/v1/models` for the model if none given),
    /// a registered one by calling its `#[backend]` function.
    pub fn build(self) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(match self {
            BackendSpec::Mock { config, model } => Arc::new(MockBackend::new(config, model)?),
            #[cfg(feature = "cpu")]
            BackendSpec::Cpu { model, config } => Arc::new(CpuBackend::load(&model, &config)?),
            #[cfg(feature = "openai")]
            BackendSpec::Server { kind, config } => {
                Arc::new(OpenAiBackend::connect(kind.name(), config)?)
            }
            BackendSpec::Registered { entry, limits } => {
                // A constructor that panics is an error like any other, not a crash.
                let built = std::panic::catch_unwind(entry.build)
                    .unwrap_or_else(|payload| {
                        Err(format!("it panicked: {}", panic_text(&*payload)))
                    })
                    .map_err(|e| {
                        BackendError::Setup(format!(
                            "the {} backend ({}:{}) could not be built: {e}",
                            entry.name, entry.file, entry.line
                        ))
                    })?;
                Arc::new(Guarded::new(built, limits))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    #[test]
    fn names_are_the_value_enum_names() {
        for kind in BackendKind::value_variants() {
            let value = kind.to_possible_value().unwrap();
            assert_eq!(value.get_name(), kind.name());
        }
    }

    #[cfg(feature = "openai")]
    #[test]
    fn every_server_kind_is_a_preset_and_back() {
        for kind in BackendKind::value_variants() {
            assert_eq!(
                crate::backend::openai::preset(kind.name()).is_some(),
                kind.is_server(),
                "{kind}"
            );
        }
        for preset in crate::backend::openai::PRESETS {
            assert!(
                BackendKind::from_str(preset.name, false).is_ok(),
                "{}",
                preset.name
            );
        }
    }
}
