//! The backend flags, one set for both doors: flattened into `sagellm-benchmark run` and
//! `compare` and into the `cargo bench` harness, turned into a [`BackendSpec`] in one place.

use clap::parser::ValueSource;

#[cfg(feature = "cpu")]
use crate::backend::cpu::WeightDtype;
use crate::backend::guard::{Limits, MAX_TIMEOUT};
use crate::backend::spec::{BackendKind, BackendName, BackendSpec};
use crate::run::config::Config;

/// The help heading of the cpu backend's flags. Every flag here names its heading: a flattened
/// group's `next_help_heading` (the server flags') would otherwise carry over to the flags after
/// it, here and in the commands that flatten this.
const CPU: &str = "CPU backend";

/// Which backend, and its settings.
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArgs {
    /// Backend engine to use
    #[arg(long, default_value = "mock", value_parser = BackendName::parser(), help_heading = "Backend")]
    pub backend: BackendName,

    /// Model path or name (required for the cpu backend), e.g. gpt2, facebook/opt-125m; for
    /// server backends the served model name (asked from /v1/models when omitted)
    #[arg(long, help_heading = "Backend")]
    pub model: Option<String>,

    /// Settings of the server backends.
    #[command(flatten)]
    pub server: ServerArgs,

    /// cpu backend: weight format (auto, keep, f32, q8_0, q4_0, q4k, q6k); auto keeps fast GGUF
    /// formats and converts slow ones (Q4_1, Q5_x) to q8_0
    #[arg(long, value_name = "DTYPE", help_heading = CPU)]
    pub dtype: Option<String>,

    /// cpu backend: inference threads (default: the cores up to 2, one fewer above 2)
    #[arg(long, value_name = "N", help_heading = CPU)]
    pub threads: Option<usize>,
}

/// Settings of the OpenAI-compatible backends (openai, vllm, sglang, lmdeploy, llamacpp); the
/// two timeouts apply to registered backends too.
// The doc comments are clap's help text, printed as written (`<server root>` is not HTML).
#[allow(rustdoc::invalid_html_tags)]
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Server backends (openai, vllm, sglang, lmdeploy, llamacpp)")]
pub struct ServerArgs {
    /// The server's URL, its root or its /v1 [default: the preset's, e.g. vllm
    /// http://127.0.0.1:8000, sglang :30000, lmdeploy :23333, llamacpp :8080]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Which endpoint to stream from
    #[arg(long, value_enum, default_value_t = ApiArg::Completions)]
    pub api: ApiArg,

    /// Read the API key from this environment variable (the key itself is never a flag and
    /// never written anywhere)
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,

    /// Longest time one request may take, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 1800.0)]
    pub request_timeout: f64,

    /// Longest wait for a response or the next chunk of its stream, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    pub stall_timeout: f64,

    /// Do not ask the server for exactly the workload's output length (ignore_eos,
    /// min_tokens); needed for servers that reject unknown fields
    #[arg(long)]
    pub no_force_output_length: bool,

    /// The server's Prometheus endpoint [default: <server root>/metrics]
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Do not scrape server metrics (KV, memory and speculation figures read "unavailable")
    #[arg(long)]
    pub no_metrics: bool,

    /// Send each request's session id in this header, for routers that keep a session on one
    /// replica (e.g. X-Session-ID): multi-turn runs (--sessions) send `<workload>-<session>`,
    /// trace replays the trace's session_id
    #[arg(long, value_name = "NAME")]
    pub session_header: Option<String>,

    /// Do not use the server's /tokenize endpoint (vLLM, SGLang, llama.cpp), which otherwise
    /// cuts synthetic prompts to their exact token count and counts output sent without `usage`
    #[arg(long)]
    pub no_tokenize: bool,

    /// The model's tokenizer.json: counts the output of responses without a `usage` block by
    /// tokenizing the streamed text (else one token per chunk). The results say which count
    /// each request used
    #[cfg(feature = "openai")]
    #[arg(long, value_name = "PATH", value_parser = load_tokenizer)]
    pub tokenizer: Option<std::sync::Arc<crate::backend::openai::token_counter::TokenCounter>>,

    /// The model's tokenizer.json: counts the output of responses without a `usage` block by
    /// tokenizing the streamed text (else one token per chunk). The results say which count
    /// each request used
    #[cfg(not(feature = "openai"))]
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<std::path::PathBuf>,
}

/// Which endpoint a server backend streams from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiArg {
    /// /v1/completions with the prompt as built
    Completions,
    /// /v1/chat/completions with the prompt as one user message
    Chat,
}

#[cfg(feature = "openai")]
fn load_tokenizer(
    path: &str,
) -> Result<std::sync::Arc<crate::backend::openai::token_counter::TokenCounter>, String> {
    crate::backend::openai::token_counter::TokenCounter::load(std::path::Path::new(path))
        .map(std::sync::Arc::new)
}

/// Why the backend flags do not make a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendArgsError {
    /// The backend exists but this build left it out.
    #[error("the {backend} backend is not compiled in: build sagellm-bench with its `{feature}` feature")]
    NotCompiled {
        /// The backend asked for.
        backend: BackendKind,
        /// The feature that compiles it.
        feature: &'static str,
    },
    /// The cpu backend was chosen without `--model`.
    #[error("--model required for CPU backend")]
    ModelRequired,
    /// A timeout that is not a positive number of seconds within the limit.
    #[error("{flag} must be a positive number of seconds (at most {max_secs}), not {value}")]
    Timeout {
        /// The flag, e.g. `--stall-timeout`.
        flag: &'static str,
        /// What it was given.
        value: f64,
        /// The longest timeout accepted.
        max_secs: u64,
    },
    /// `--dtype` names no weight format.
    #[error("{0}")]
    Dtype(String),
}

/// The flags that only one kind of backend reads, by clap id.
const SERVER_ONLY: &[&str] = &[
    "base_url",
    "api",
    "api_key_env",
    "no_force_output_length",
    "metrics_url",
    "no_metrics",
    "no_tokenize",
    "tokenizer",
    "session_header",
];
/// Read by the server backends and by registered ones.
const TIMEOUTS: &[&str] = &["request_timeout", "stall_timeout"];
const CPU_ONLY: &[&str] = &["dtype", "threads"];
/// Read by the built-in backends only: a registered backend picks its own model.
const BUILTIN_ONLY: &[&str] = &["model"];

/// A flag given for a backend that does not read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} is for {applies_to}, not --backend {backend}")]
pub struct MisplacedFlag {
    /// The flag without its dashes, e.g. `base-url`.
    pub flag: String,
    /// Which backends read it.
    pub applies_to: &'static str,
    /// The backend chosen.
    pub backend: BackendName,
}

impl BackendArgs {
    /// The first flag in `matches` (the matches these arguments were parsed from) that was
    /// given, on the command line or through the environment, for a backend that does not
    /// read it: a flag silently ignored would make the user believe it took effect.
    pub fn misplaced_flag(&self, matches: &clap::ArgMatches) -> Option<MisplacedFlag> {
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let misfit = |ids: &'static [&'static str], applies: bool| {
            ids.iter().copied().find(|id| !applies && given(id))
        };
        let server = self.backend.is_server();
        let registered = matches!(self.backend, BackendName::Registered(_));
        let (id, applies_to) = if let Some(id) = misfit(SERVER_ONLY, server) {
            (
                id,
                "server backends (openai, vllm, sglang, lmdeploy, llamacpp)",
            )
        } else if let Some(id) = misfit(TIMEOUTS, server || registered) {
            (id, "server backends and registered ones")
        } else if let Some(id) = misfit(CPU_ONLY, self.backend.kind() == Some(BackendKind::Cpu)) {
            (id, "the cpu backend")
        } else if let Some(id) = misfit(BUILTIN_ONLY, !registered) {
            (id, "the built-in backends")
        } else {
            return None;
        };
        Some(MisplacedFlag {
            flag: id.replace('_', "-"),
            applies_to,
            backend: self.backend,
        })
    }

    /// The backend these flags name, with the config file's `[mock]` and `[cpu]` tables under
    /// the flags.
    pub fn spec(&self, config: &Config) -> Result<BackendSpec, BackendArgsError> {
        let kind = match self.backend {
            BackendName::Builtin(kind) => kind,
            BackendName::Registered(entry) => {
                return Ok(BackendSpec::Registered {
                    entry,
                    limits: self.server.limits()?,
                })
            }
        };
        match kind {
            BackendKind::Mock => Ok(BackendSpec::Mock {
                config: config.mock.clone(),
                model: self.model.clone(),
            }),
            #[cfg(feature = "cpu")]
            BackendKind::Cpu => {
                let mut cpu = config.cpu.clone();
                if let Some(dtype) = &self.dtype {
                    cpu.dtype = WeightDtype::parse(dtype).map_err(BackendArgsError::Dtype)?;
                }
                cpu.threads = self.threads.or(cpu.threads);
                let model = self.model.clone().ok_or(BackendArgsError::ModelRequired)?;
                Ok(BackendSpec::Cpu { model, config: cpu })
            }
            #[cfg(feature = "openai")]
            kind if kind.is_server() => Ok(BackendSpec::Server {
                kind,
                config: self.server.config(self.model.clone())?,
            }),
            // A backend whose feature is off (the mock has none, so it never lands here).
            kind => Err(BackendArgsError::NotCompiled {
                backend: kind,
                feature: kind.feature().unwrap_or_default(),
            }),
        }
    }
}

impl ServerArgs {
    /// The request and stall timeouts these flags give.
    pub fn limits(&self) -> Result<Limits, BackendArgsError> {
        let capped = |flag: &'static str, value: f64| {
            timeout(flag, value).and_then(|d| {
                if d <= MAX_TIMEOUT {
                    Ok(d)
                } else {
                    Err(BackendArgsError::Timeout {
                        flag,
                        value,
                        max_secs: MAX_TIMEOUT.as_secs(),
                    })
                }
            })
        };
        Ok(Limits {
            request: capped("--request-timeout", self.request_timeout)?,
            stall: capped("--stall-timeout", self.stall_timeout)?,
        })
    }
}

/// A timeout flag's value: a positive number of seconds. (The openai backend checks the upper
/// bound itself, naming its own limit.)
fn timeout(flag: &'static str, value: f64) -> Result<std::time::Duration, BackendArgsError> {
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(BackendArgsError::Timeout {
            flag,
            value,
            max_secs: MAX_TIMEOUT.as_secs(),
        })
}

#[cfg(feature = "openai")]
impl ServerArgs {
    /// The openai backend's settings these flags give, for the served model `model`.
    pub fn config(
        &self,
        model: Option<String>,
    ) -> Result<crate::backend::openai::OpenAiConfig, BackendArgsError> {
        use crate::backend::openai::{Api, OpenAiConfig};
        Ok(OpenAiConfig {
            base_url: self.base_url.clone(),
            model,
            api: match self.api {
                ApiArg::Completions => Api::Completions,
                ApiArg::Chat => Api::Chat,
            },
            api_key_env: self.api_key_env.clone(),
            request_timeout: timeout("--request-timeout", self.request_timeout)?,
            stall_timeout: timeout("--stall-timeout", self.stall_timeout)?,
            force_output_length: !self.no_force_output_length,
            metrics_url: self.metrics_url.clone(),
            no_metrics: self.no_metrics,
            no_tokenize: self.no_tokenize,
            tokenizer: self.tokenizer.clone(),
            session_header: self.session_header.clone(),
            ..OpenAiConfig::default()
        })
    }
}
