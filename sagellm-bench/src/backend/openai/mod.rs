//! Any OpenAI-compatible streaming server: vLLM, SGLang, LMDeploy, TGI, llama.cpp's server,
//! Ollama. `vllm`, `sglang`, `lmdeploy` and `llamacpp` are presets of this one backend (a
//! default address and the metric names to scrape), not separate code paths.
//!
//! Each request is a streamed `POST /v1/completions` (or `/v1/chat/completions`) read as
//! server-sent events ([`eventsource_stream`], a maintained parser: events split across TCP
//! reads, `\r\n` line ends and comment lines are its business, not ours). One `reqwest` client
//! holds the connection pool for the whole run, so connections are reused; TLS is rustls,
//! trusting the system's root certificates (`rustls-tls-native-roots`), so a server behind a
//! company CA works as it does for curl.
//!
//! Every fault becomes a failed request with its reason, never a stopped run: connection
//! refused or broken ([`ErrorKind::Connection`]), an error status ([`ErrorKind::Http`]: the
//! status and the server's message), a malformed chunk or a stream that ends before `[DONE]`
//! ([`ErrorKind::Protocol`]), an error object in the stream ([`ErrorKind::Engine`]), and no
//! byte for `stall_timeout` or the whole request past `request_timeout`
//! ([`ErrorKind::Timeout`]).
//!
//! The API key is read from the environment variable the user names, kept out of `Debug`,
//! sent as a sensitive header, and never recorded: the settings record the variable's name.

pub(crate) mod stream;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Serialize;
use tokio::time::Instant;

use super::prometheus::{self, MetricNames, Scraper};
use super::{
    Backend, BackendError, EngineFigures, ErrorKind, GenerationRequest, RequestError, StreamEvent,
    Usage,
};
use crate::backend::token_counter::TokenCounter;
use crate::workload::Workload;

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
        }
    }
}

/// The API key; its `Debug` never shows it.
#[derive(Clone)]
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// The backend.
pub struct OpenAiBackend {
    preset: &'static Preset,
    model: String,
    shared: Arc<Shared>,
    scraper: Option<Scraper>,
    settings: serde_json::Value,
    /// Output length asked for in the current workload, for the mismatch warning.
    asked: Mutex<usize>,
    tokenizer: Option<Arc<TokenCounter>>,
}

/// What every request of the backend shares.
struct Shared {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    api: Api,
    force_output_length: bool,
    request_timeout: Duration,
    stall_timeout: Duration,
    counts: Counts,
}

/// Per-workload counts of token-count surprises, reported once per workload.
#[derive(Default)]
struct Counts {
    finished: AtomicUsize,
    without_usage: AtomicUsize,
    length_mismatch: AtomicUsize,
}

/// The server's root URL and its `/v1` URL, from what the user gave.
fn split_base_url(base: &str) -> Result<(String, String), BackendError> {
    let trimmed = base.trim().trim_end_matches('/');
    check_url("server", base, "http://127.0.0.1:8000")?;
    Ok(match trimmed.strip_suffix("/v1") {
        Some(root) => (root.to_string(), trimmed.to_string()),
        None => (trimmed.to_string(), format!("{trimmed}/v1")),
    })
}

/// Checks that `given` is an http(s) URL fit to be recorded: URLs land in the results'
/// provenance and in error messages, so one holding a password is refused rather than written.
fn check_url(what: &str, given: &str, example: &str) -> Result<(), BackendError> {
    let url = reqwest::Url::parse(given.trim()).map_err(|e| {
        BackendError::Setup(format!(
            "the {what} URL `{given}` is not a URL ({e}); give one like {example}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || !url.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(BackendError::Setup(format!(
            "the {what} URL `{given}` must start with http:// or https:// and name a host, like {example}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BackendError::Setup(format!(
            "the {what} URL holds a user name or password, which would be written into the results; \
             drop it from the URL and put the secret in an environment variable named by --api-key-env"
        )));
    }
    Ok(())
}

/// The longest request or stall timeout accepted: a deadline further out overflows the clock.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// An error with its causes, e.g. "error sending request: ... Connection refused".
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl OpenAiBackend {
    /// Builds the backend for preset `name`; asks the server for its model when none is given.
    /// Blocks on that one request (on a thread of its own, so it may be called from anywhere).
    pub fn connect(name: &str, config: OpenAiConfig) -> Result<Self, BackendError> {
        let preset = preset(name).ok_or_else(|| {
            BackendError::Setup(format!(
                "`{name}` is not an OpenAI-compatible preset; choose one of: {}",
                PRESETS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let base = config
            .base_url
            .clone()
            .unwrap_or_else(|| preset.default_base_url.to_string());
        let (root, v1) = split_base_url(&base)?;
        if let Some(url) = &config.metrics_url {
            check_url("metrics", url, "http://127.0.0.1:8000/metrics")?;
        }
        for (flag, value) in [
            ("--request-timeout", config.request_timeout),
            ("--stall-timeout", config.stall_timeout),
        ] {
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(BackendError::Setup(format!(
                    "{flag} must lie between 0 and {} seconds (30 days), not {} s",
                    MAX_TIMEOUT.as_secs(),
                    value.as_secs_f64()
                )));
            }
        }

        let mut headers = HeaderMap::new();
        if let Some(var) = &config.api_key_env {
            let key = std::env::var(var).map_err(|_| {
                BackendError::Setup(format!(
                    "--api-key-env {var}: the environment variable {var} is not set; export it (export {var}=...) or drop the flag"
                ))
            })?;
            let key = ApiKey(key);
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.0)).map_err(|_| {
                BackendError::Setup(format!(
                    "the API key in {var} holds characters that cannot go in an HTTP header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let build_client = || {
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .connect_timeout(config.stall_timeout.min(Duration::from_secs(30)))
                .build()
                .map_err(|e| {
                    BackendError::Setup(format!(
                        "cannot build the HTTP client: {}",
                        error_chain(&e)
                    ))
                })
        };
        let model = match &config.model {
            Some(m) => m.clone(),
            // A client of its own: its pooled connection dies with the lookup's runtime and must
            // not be offered to the run's.
            None => served_model(build_client()?, &v1)?,
        };
        let client = build_client()?;
        let endpoint = match config.api {
            Api::Completions => format!("{v1}/completions"),
            Api::Chat => format!("{v1}/chat/completions"),
        };
        let metrics_url = config
            .metrics_url
            .clone()
            .unwrap_or_else(|| format!("{root}/metrics"));
        let scraper = (!config.no_metrics).then(|| {
            Scraper::new(
                client.clone(),
                metrics_url.clone(),
                preset.metrics.to_vec(),
                config.scrape_interval,
            )
        });
        let settings = serde_json::json!({
            "preset": preset.name,
            "base_url": v1,
            "endpoint": endpoint,
            "api": config.api,
            // The variable's name only: the key itself is never recorded.
            "api_key_env": config.api_key_env,
            "request_timeout_s": config.request_timeout.as_secs_f64(),
            "stall_timeout_s": config.stall_timeout.as_secs_f64(),
            "force_output_length": config.force_output_length,
            "metrics_url": if config.no_metrics { None } else { Some(metrics_url) },
            "token_count": match &config.tokenizer {
                Some(_) => "usage.completion_tokens where the server sends it; else the streamed text tokenized with `tokenizer`",
                None => "usage.completion_tokens where the server sends it; else one token per content chunk",
            },
            "tokenizer": config.tokenizer.as_ref().map(|t| t.path().display().to_string()),
        });
        Ok(OpenAiBackend {
            preset,
            shared: Arc::new(Shared {
                client,
                endpoint,
                model: model.clone(),
                api: config.api,
                force_output_length: config.force_output_length,
                request_timeout: config.request_timeout,
                stall_timeout: config.stall_timeout,
                counts: Counts::default(),
            }),
            model,
            scraper,
            settings,
            asked: Mutex::new(0),
            tokenizer: config.tokenizer.clone(),
        })
    }
}

/// Asks `/v1/models` for the served model, on a thread and runtime of its own.
fn served_model(client: reqwest::Client, v1: &str) -> Result<String, BackendError> {
    let url = format!("{v1}/models");
    let lookup = move || -> Result<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(async {
            let response = client
                .get(&url)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("reading {url}: {}", error_chain(&e)))?;
            if !status.is_success() {
                return Err(format!("{url} answered HTTP {status}: {}", clip(&body)));
            }
            let json: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| format!("{url} did not answer JSON ({e})"))?;
            let ids: Vec<&str> = json
                .get("data")
                .and_then(|d| d.as_array())
                .map(|a| a.iter().filter_map(|m| m.get("id")?.as_str()).collect())
                .unwrap_or_default();
            match ids.as_slice() {
                [] => Err(format!("{url} lists no model")),
                [one] => Ok(one.to_string()),
                [first, ..] => {
                    tracing::warn!(
                        "the server serves {} models ({}); using `{first}`; choose with --model",
                        ids.len(),
                        ids.join(", ")
                    );
                    Ok(first.to_string())
                }
            }
        })
    };
    std::thread::spawn(lookup)
        .join()
        .map_err(|_| BackendError::Setup("the /v1/models lookup panicked".into()))?
        .map_err(|e| {
            BackendError::Setup(format!(
                "could not learn the served model: {e}; is the server running? Name the model with --model NAME"
            ))
        })
}

fn clip(text: &str) -> String {
    let t: String = text.trim().chars().take(300).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    fn name(&self) -> &str {
        self.preset.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn settings(&self) -> serde_json::Value {
        self.settings.clone()
    }

    async fn start_workload(&self, workload: &Workload) -> Result<(), BackendError> {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = workload.output_tokens;
        Ok(())
    }

    async fn reset_statistics(&self) {
        let c = &self.shared.counts;
        c.finished.store(0, Ordering::Relaxed);
        c.without_usage.store(0, Ordering::Relaxed);
        c.length_mismatch.store(0, Ordering::Relaxed);
        if let Some(s) = &self.scraper {
            s.begin().await;
        }
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let exchange = Exchange {
            shared: self.shared.clone(),
            asked: request.max_output_tokens,
            deadline: Instant::now() + self.shared.request_timeout,
            phase: Phase::NotSent(request),
            usage: None,
            finish_seen: false,
        };
        futures::stream::unfold(exchange, |mut ex| async move {
            let event = ex.next_event().await?;
            Some((event, ex))
        })
        .boxed()
    }

    fn output_token_counter(&self) -> Option<Arc<dyn super::CountTokens>> {
        self.tokenizer
            .clone()
            .map(|t| t as Arc<dyn super::CountTokens>)
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        let c = &self.shared.counts;
        let finished = c.finished.load(Ordering::Relaxed);
        let without = c.without_usage.load(Ordering::Relaxed);
        let mismatch = c.length_mismatch.load(Ordering::Relaxed);
        let asked = *self.asked.lock().unwrap_or_else(|e| e.into_inner());
        match (&self.tokenizer, without) {
            (_, 0) => {}
            (Some(tokenizer), _) => tracing::warn!(
                "{without} of {finished} requests ended without a usage block; their output length was counted by tokenizing the streamed text with {}",
                tokenizer.path().display()
            ),
            (None, _) => tracing::warn!(
                "{without} of {finished} requests ended without a usage block; their output length is one token per streamed chunk, which undercounts chunks holding several tokens (give --tokenizer PATH to count them with the model's tokenizer.json)"
            ),
        }
        if mismatch > 0 {
            tracing::warn!(
                "{mismatch} of {finished} requests returned a different number of tokens than the {asked} asked for; the server may ignore ignore_eos/min_tokens. TBT and throughput use the server's count"
            );
        }
        Ok(match &self.scraper {
            Some(s) => s.end().await,
            None => EngineFigures::default(),
        })
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

enum Phase {
    NotSent(GenerationRequest),
    Streaming(Events),
    Finished,
}

/// One request's life: send, then read events until it is done or failed.
struct Exchange {
    shared: Arc<Shared>,
    asked: usize,
    deadline: Instant,
    phase: Phase,
    usage: Option<Usage>,
    finish_seen: bool,
}

/// The request body; the prompt is borrowed, the rest are small.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<[Message<'a>; 1]>,
    max_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_eos: Option<bool>,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

impl Exchange {
    fn fail(&mut self, kind: ErrorKind, message: String) -> Option<StreamEvent> {
        self.phase = Phase::Finished;
        Some(StreamEvent::Error(RequestError::new(kind, message)))
    }

    fn wait_limit(&self) -> (Instant, bool) {
        wait_limit(&self.shared, self.deadline)
    }

    fn timeout_message(&self, stalled: bool, what: &str) -> String {
        timeout_message(&self.shared, stalled, what)
    }

    async fn next_event(&mut self) -> Option<StreamEvent> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::Finished => return None,
                Phase::NotSent(request) => {
                    match send(&self.shared, self.deadline, &request).await {
                        Ok(events) => self.phase = Phase::Streaming(events),
                        Err(error) => return Some(StreamEvent::Error(error)),
                    }
                }
                Phase::Streaming(mut events) => {
                    let (limit, stalled) = self.wait_limit();
                    let next = tokio::time::timeout_at(limit, events.next()).await;
                    self.phase = Phase::Streaming(events);
                    let event = match next {
                        Err(_) => {
                            let message = self.timeout_message(stalled, "the next chunk");
                            return self.fail(ErrorKind::Timeout, message);
                        }
                        Ok(None) => {
                            if self.finish_seen {
                                return self.done();
                            }
                            return self.fail(
                                ErrorKind::Protocol,
                                "the stream ended before [DONE] and without a finish_reason".into(),
                            );
                        }
                        Ok(Some(Err(EventStreamError::Transport(e)))) => {
                            return self.fail(
                                ErrorKind::Connection,
                                format!("the connection broke mid-stream: {}", error_chain(&e)),
                            )
                        }
                        Ok(Some(Err(e))) => {
                            return self.fail(
                                ErrorKind::Protocol,
                                format!("the event stream is malformed: {e}"),
                            )
                        }
                        Ok(Some(Ok(event))) => event,
                    };
                    match stream::interpret(&event.event, &event.data) {
                        stream::EventMeaning::Nothing => {}
                        stream::EventMeaning::Done => return self.done(),
                        stream::EventMeaning::Failed(kind, message) => {
                            return self.fail(kind, message)
                        }
                        stream::EventMeaning::Chunk(chunk) => {
                            if chunk.usage.is_some() {
                                self.usage = chunk.usage;
                            }
                            self.finish_seen |= chunk.finished;
                            if chunk.tokens > 0 {
                                return Some(StreamEvent::Tokens {
                                    text: chunk.text,
                                    tokens: chunk.tokens,
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    /// The request finished: count token-length surprises and end the stream.
    fn done(&mut self) -> Option<StreamEvent> {
        self.phase = Phase::Finished;
        let c = &self.shared.counts;
        c.finished.fetch_add(1, Ordering::Relaxed);
        match self.usage {
            None => {
                c.without_usage.fetch_add(1, Ordering::Relaxed);
            }
            Some(u) if self.shared.force_output_length && u.completion_tokens != self.asked => {
                c.length_mismatch.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
        Some(StreamEvent::Done { usage: self.usage })
    }
}

/// When the next wait must end: the stall limit, or the request's deadline if sooner.
fn wait_limit(shared: &Shared, deadline: Instant) -> (Instant, bool) {
    let stall = Instant::now() + shared.stall_timeout;
    if stall < deadline {
        (stall, true)
    } else {
        (deadline, false)
    }
}

fn timeout_message(shared: &Shared, stalled: bool, what: &str) -> String {
    if stalled {
        format!(
                "no data for {:.1} s while waiting for {what} (stall timeout; raise it with --stall-timeout)",
                shared.stall_timeout.as_secs_f64()
            )
    } else {
        format!(
            "the request took longer than {:.1} s (raise it with --request-timeout)",
            shared.request_timeout.as_secs_f64()
        )
    }
}

/// Sends the request and checks the status; returns the event stream.
async fn send(
    shared: &Shared,
    deadline: Instant,
    request: &GenerationRequest,
) -> Result<Events, RequestError> {
    let force = shared.force_output_length;
    let n = request.max_output_tokens;
    let body = Body {
        model: &shared.model,
        prompt: (shared.api == Api::Completions).then_some(request.prompt.as_str()),
        messages: (shared.api == Api::Chat).then_some([Message {
            role: "user",
            content: &request.prompt,
        }]),
        max_tokens: n,
        min_tokens: force.then_some(n),
        ignore_eos: force.then_some(true),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
    };
    let body = serde_json::to_vec(&body).map_err(|e| {
        RequestError::new(ErrorKind::Protocol, format!("cannot encode request: {e}"))
    })?;
    let (limit, stalled) = wait_limit(shared, deadline);
    let sent = shared
        .client
        .post(&shared.endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .body(body)
        .send();
    let response = match tokio::time::timeout_at(limit, sent).await {
        Err(_) => {
            return Err(RequestError::new(
                ErrorKind::Timeout,
                timeout_message(shared, stalled, "the response"),
            ))
        }
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "cannot connect to"
            } else {
                "sending the request failed for"
            };
            return Err(RequestError::new(
                ErrorKind::Connection,
                format!("{what} {}: {}", shared.endpoint, error_chain(&e)),
            ));
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let (limit, _) = wait_limit(shared, deadline);
        let text = tokio::time::timeout_at(limit, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").map(stream::error_message))
            .unwrap_or_else(|| clip(&text));
        let hint = match status.as_u16() {
            401 | 403 => " (check --api-key-env)",
            404 => " (check --base-url, --model and --api)",
            429 => " (rate limited)",
            _ => "",
        };
        return Err(RequestError::new(
            ErrorKind::Http,
            format!("HTTP {status}{hint}: {message}"),
        ));
    }
    Ok(response.bytes_stream().eventsource().boxed())
}

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
