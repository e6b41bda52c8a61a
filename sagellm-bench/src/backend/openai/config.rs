//! The presets, the backend's settings and the checks of the URLs it is given.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::prometheus::{self, MetricNames};
use super::token_counter::TokenCounter;
use crate::backend::secrets::shown;
use crate::backend::BackendError;

/// A named preset: where such a server listens by default and which metric names it exposes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub default_base_url: &'static str,
    pub metrics: &'static [MetricNames],
}

/// The presets, by backend name.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        default_base_url: "http://127.0.0.1:8000",
        metrics: prometheus::ALL_FAMILIES,
    },
    Preset {
        name: "vllm",
        default_base_url: "http://127.0.0.1:8000",
        metrics: &[prometheus::VLLM],
    },
    Preset {
        name: "sglang",
        default_base_url: "http://127.0.0.1:30000",
        metrics: &[prometheus::SGLANG],
    },
    Preset {
        name: "lmdeploy",
        default_base_url: "http://127.0.0.1:23333",
        metrics: &[prometheus::LMDEPLOY],
    },
    Preset {
        name: "llamacpp",
        default_base_url: "http://127.0.0.1:8080",
        metrics: &[prometheus::LLAMA_CPP],
    },
];

/// Looks a preset up by backend name.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Which OpenAI endpoint to stream from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/completions` with a `prompt`: the prompt reaches the model as built, so its token
    /// count is what the workload asked for.
    #[default]
    Completions,
    /// `/v1/chat/completions` with one user message (the chat template adds tokens).
    Chat,
}

/// Everything the openai backend needs besides the preset.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The server's root or its `/v1` URL; `None` uses the preset's default.
    pub base_url: Option<String>,
    /// The served model name; `None` asks `/v1/models`.
    pub model: Option<String>,
    pub api: Api,
    /// The name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Longest time for a whole request.
    pub request_timeout: Duration,
    /// Longest wait for the response or the next byte of its stream.
    pub stall_timeout: Duration,
    /// Ask for exactly `max_output_tokens` (`ignore_eos`, `min_tokens`). Servers that reject
    /// unknown fields (OpenAI's own API) need this off.
    pub force_output_length: bool,
    /// The Prometheus endpoint; `None` uses `<server root>/metrics`.
    pub metrics_url: Option<String>,
    /// Do not scrape server metrics at all.
    pub no_metrics: bool,
    /// How often gauges (KV use, memory) are sampled during a workload.
    pub scrape_interval: Duration,
    /// Counts the output of responses without a `usage` block (`--tokenizer`); without it they
    /// count one token per streamed chunk.
    pub tokenizer: Option<Arc<TokenCounter>>,
    /// The HTTP header that carries each request's session id (a multi-turn session, or a
    /// trace's `session_id`) for routers that keep a session on one replica, e.g.
    /// `X-Session-ID`; `None` sends none.
    pub session_header: Option<String>,
    /// Do not use the server's `/tokenize` endpoint (`--no-tokenize`): prompts keep the
    /// workload's word-based lengths, and output without `usage` is counted as without it.
    pub no_tokenize: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: None,
            model: None,
            api: Api::Completions,
            api_key_env: None,
            request_timeout: Duration::from_secs(1800),
            stall_timeout: Duration::from_secs(300),
            force_output_length: true,
            metrics_url: None,
            no_metrics: false,
            scrape_interval: Duration::from_millis(250),
            tokenizer: None,
            session_header: None,
            no_tokenize: false,
        }
    }
}

/// The API key; its `Debug` never shows it.
#[derive(Clone)]
pub(super) struct ApiKey(pub(super) String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// The server's root URL and its `/v1` URL, from what the user gave, without its query.
pub(super) fn split_base_url(base: &str) -> Result<(String, String), BackendError> {
    let mut url = check_url("server", base, "http://127.0.0.1:8000")?;
    url.set_query(None);
    url.set_fragment(None);
    let trimmed = url.as_str().trim_end_matches('/');
    Ok(match trimmed.strip_suffix("/v1") {
        Some(root) => (root.to_string(), trimmed.to_string()),
        None => (trimmed.to_string(), format!("{trimmed}/v1")),
    })
}

/// `url` with the query of `given` (a gateway's `?api-version=` or `?api_key=`), which every
/// request built from the base URL carries.
pub(super) fn with_query_of(url: String, given: &str) -> String {
    match reqwest::Url::parse(given.trim())
        .ok()
        .and_then(|g| g.query().map(str::to_string))
    {
        Some(query) => format!("{url}?{query}"),
        None => url,
    }
}

/// Checks that `given` is an http(s) URL fit to be recorded: URLs land in the results'
/// provenance and in error messages, so one holding a password is refused rather than written.
pub(super) fn check_url(
    what: &str,
    given: &str,
    example: &str,
) -> Result<reqwest::Url, BackendError> {
    let url = reqwest::Url::parse(given.trim()).map_err(|e| {
        BackendError::Setup(format!(
            "the {what} URL `{}` is not a URL ({e}); give one like {example}",
            shown(given.trim())
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || !url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(BackendError::Setup(format!(
            "the {what} URL `{}` must start with http:// or https:// and name a host, like {example}",
            shown(given.trim())
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BackendError::Setup(format!(
            "the {what} URL holds a user name or password, which would be written into the results; \
             drop it from the URL and put the secret in an environment variable named by --api-key-env"
        )));
    }
    Ok(url)
}

pub use crate::backend::guard::MAX_TIMEOUT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_with_or_without_v1() {
        let (root, v1) = split_base_url("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (root.as_str(), v1.as_str()),
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1")
        );
        let (root, v1) = split_base_url("http://h:1/v1").unwrap();
        assert_eq!(
            (root.as_str(), v1.as_str()),
            ("http://h:1", "http://h:1/v1")
        );
        assert!(split_base_url("localhost:8000").is_err());
        assert!(split_base_url("not a url").is_err());
    }

    #[test]
    fn api_key_debug_is_hidden() {
        assert_eq!(
            format!("{:?}", ApiKey("sk-secret".into())),
            "ApiKey(<hidden>)"
        );
    }
}
