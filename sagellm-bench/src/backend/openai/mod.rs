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

pub(crate) mod body;
pub mod prometheus;
mod proxy;
pub(crate) mod stream;
pub mod token_counter;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::{BoxStream, Stream, StreamExt};
use hyper_util::client::legacy::connect::HttpInfo;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::Serialize;
use tokio::time::Instant;

use self::prometheus::{MetricNames, Scraper};
use self::token_counter::TokenCounter;
use super::secrets::{self, shown};
use super::{
    Backend, BackendError, ConnectionFigures, EngineFigures, ErrorKind, GenerationRequest,
    RequestError, StreamEvent, Usage,
};
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
    /// Requests the current workload keeps in flight (closed loop), 0 when not known (open
    /// loop): the connections opened before its measured requests.
    in_flight_target: AtomicUsize,
    tokenizer: Option<Arc<TokenCounter>>,
}

/// What every request of the backend shares.
struct Shared {
    /// The pooled client every request goes out on.
    client: reqwest::Client,
    /// A client that keeps no idle connection, so each request on it opens a new one: for the
    /// one retry of a request whose reused connection the server had closed.
    fresh_client: reqwest::Client,
    /// Connections both clients opened, over the backend's life.
    connections: Arc<Connects>,
    /// Local addresses of connections that have carried an answer: a request that fails on one
    /// of these went out on a reused connection.
    answered_on: Mutex<HashSet<SocketAddr>>,
    /// `{v1}/models`, asked to open connections before the measured requests.
    models_url: String,
    endpoint: String,
    /// The endpoint as messages may show it.
    shown_endpoint: String,
    /// Kept out of every message the backend writes.
    secrets: secrets::Secrets,
    model: String,
    api: Api,
    force_output_length: bool,
    request_timeout: Duration,
    stall_timeout: Duration,
    counts: Counts,
}

/// Connects of the clients' connectors, counted as they start and end.
#[derive(Default)]
struct Connects {
    started: AtomicU64,
    ended: AtomicU64,
    /// Connects that gave a connection.
    opened: AtomicU64,
}

impl Connects {
    /// Counts one connect of a connector, as it starts and as it ends.
    fn count<C, E>(
        self: &Arc<Self>,
        connecting: impl std::future::Future<Output = Result<C, E>>,
    ) -> impl std::future::Future<Output = Result<C, E>> {
        let connects = self.clone();
        connects.started.fetch_add(1, Ordering::Relaxed);
        async move {
            let connected = connecting.await;
            if connected.is_ok() {
                connects.opened.fetch_add(1, Ordering::Relaxed);
            }
            connects.ended.fetch_add(1, Ordering::Relaxed);
            connected
        }
    }
}

/// Per-workload counts of token-count surprises, reported once per workload.
#[derive(Default)]
struct Counts {
    finished: AtomicUsize,
    without_usage: AtomicUsize,
    length_mismatch: AtomicUsize,
    retried: AtomicUsize,
    /// Answers whose body had not ended `BODY_END_LIMIT` after `[DONE]`; their connections
    /// were closed.
    unended_bodies: AtomicUsize,
    /// `Shared::connections` when the measured requests began.
    connections_at_start: AtomicU64,
}

/// The server's root URL and its `/v1` URL, from what the user gave, without its query.
fn split_base_url(base: &str) -> Result<(String, String), BackendError> {
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
fn with_query_of(url: String, given: &str) -> String {
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
fn check_url(what: &str, given: &str, example: &str) -> Result<reqwest::Url, BackendError> {
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
        let mut secrets = secrets::Secrets::default();
        secrets.add_url(&base);
        if let Some(url) = &config.metrics_url {
            check_url("metrics", url, "http://127.0.0.1:8000/metrics")?;
            secrets.add_url(url);
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
            secrets.add(&key.0);
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.0)).map_err(|_| {
                BackendError::Setup(format!(
                    "the API key in {var} holds characters that cannot go in an HTTP header"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let connections = Arc::new(Connects::default());
        let proxy = proxy::for_server(&v1);
        let builder = || {
            let builder = reqwest::Client::builder();
            // Loopback is never sent through a proxy from the environment: the proxy's own
            // latency would land in every TTFT of a server on this machine.
            let builder = if proxy.bypassed() {
                builder.no_proxy()
            } else {
                builder
            };
            builder
                .default_headers(headers.clone())
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .connect_timeout(config.stall_timeout.min(Duration::from_secs(30)))
        };
        let build = |builder: reqwest::ClientBuilder| {
            builder.build().map_err(|e| {
                BackendError::Setup(format!("cannot build the HTTP client: {}", error_chain(&e)))
            })
        };
        // Counted where connections are made: each call of reqwest's connector.
        let counted = |builder: reqwest::ClientBuilder| {
            let connections = connections.clone();
            builder.connector_layer(tower::util::MapFutureLayer::new(move |connecting| {
                connections.count(connecting)
            }))
        };
        let build_client = || build(builder());
        let model = match &config.model {
            Some(m) => m.clone(),
            // A client of its own: its pooled connection dies with the lookup's runtime and must
            // not be offered to the run's.
            None => served_model(
                build_client()?,
                &with_query_of(format!("{v1}/models"), &base),
            )
            .map_err(|e| BackendError::Setup(secrets.redact(&e.to_string())))?,
        };
        let client = build(counted(builder()))?;
        let fresh_client = build(counted(builder().pool_max_idle_per_host(0)))?;
        let endpoint = match config.api {
            Api::Completions => format!("{v1}/completions"),
            Api::Chat => format!("{v1}/chat/completions"),
        };
        let endpoint = with_query_of(endpoint, &base);
        let metrics_url = config
            .metrics_url
            .clone()
            .map(|u| u.trim().to_string())
            .unwrap_or_else(|| with_query_of(format!("{root}/metrics"), &base));
        // A client of its own: scrapes must neither take pooled connections from requests nor
        // count among the requests' connections.
        let scraper = match config.no_metrics {
            true => None,
            false => Some(Scraper::new(
                build_client()?,
                metrics_url.clone(),
                shown(&metrics_url),
                preset.metrics.to_vec(),
                config.scrape_interval,
            )),
        };
        let settings = serde_json::json!({
            "preset": preset.name,
            "base_url": shown(&with_query_of(v1.clone(), &base)),
            "endpoint": shown(&endpoint),
            "api": config.api,
            // The variable's name only: the key itself is never recorded.
            "api_key_env": config.api_key_env,
            "request_timeout_s": config.request_timeout.as_secs_f64(),
            "stall_timeout_s": config.stall_timeout.as_secs_f64(),
            "force_output_length": config.force_output_length,
            "metrics_url": if config.no_metrics { None } else { Some(shown(&metrics_url)) },
            // The proxy requests go through, from the environment (HTTPS_PROXY, HTTP_PROXY,
            // ALL_PROXY), credentials removed; null when none, or bypassed for loopback.
            "proxy": proxy.recorded(),
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
                fresh_client,
                connections,
                answered_on: Mutex::new(HashSet::new()),
                models_url: with_query_of(format!("{v1}/models"), &base),
                shown_endpoint: shown(&endpoint),
                secrets,
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
            in_flight_target: AtomicUsize::new(0),
            tokenizer: config.tokenizer.clone(),
        })
    }
}

/// Asks `/v1/models` for the served model, on a thread and runtime of its own.
fn served_model(client: reqwest::Client, models_url: &str) -> Result<String, BackendError> {
    let url = models_url.to_string();
    let shown_url = shown(models_url);
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
                .map_err(|e| {
                    format!(
                        "cannot reach {shown_url}: {}",
                        error_chain(&e.without_url())
                    )
                })?;
            let status = response.status();
            let (body, cut) = body::read_capped(response, body::MODELS_BODY_LIMIT)
                .await
                .map_err(|e| format!("reading {shown_url}: {}", error_chain(&e.without_url())))?;
            if !status.is_success() {
                return Err(format!(
                    "{shown_url} answered HTTP {status}: {}",
                    clip(&body)
                ));
            }
            if cut {
                return Err(format!(
                    "{shown_url} answered more than {} MiB, which is no model list",
                    body::MODELS_BODY_LIMIT / (1024 * 1024)
                ));
            }
            let json: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| format!("{shown_url} did not answer JSON ({e})"))?;
            let ids: Vec<&str> = json
                .get("data")
                .and_then(|d| d.as_array())
                .map(|a| a.iter().filter_map(|m| m.get("id")?.as_str()).collect())
                .unwrap_or_default();
            match ids.as_slice() {
                [] => Err(format!("{shown_url} lists no model")),
                [one] => Ok(one.to_string()),
                [first, ..] => {
                    tracing::warn!(
                        "the server serves {} models ({}); using `{}`; choose with --model",
                        ids.len(),
                        printable(&ids.join(", ")),
                        printable(first)
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

/// Text from a server as a terminal may show it: control characters (escape sequences that
/// would move the cursor or recolour the terminal) replaced.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// A server's message, as short as messages are kept, and printable.
fn clip(text: &str) -> String {
    let t: String = printable(&text.trim().chars().take(300).collect::<String>());
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
        let in_flight = workload
            .arrival
            .concurrency()
            .map_or(0, |c| c.min(workload.num_requests));
        self.in_flight_target.store(in_flight, Ordering::Relaxed);
        Ok(())
    }

    async fn reset_statistics(&self) {
        // Before the measured requests: connections opened now stay out of their TTFTs.
        let in_flight = self.in_flight_target.load(Ordering::Relaxed);
        self.shared.open_connections(in_flight).await;
        let c = &self.shared.counts;
        c.finished.store(0, Ordering::Relaxed);
        c.without_usage.store(0, Ordering::Relaxed);
        c.length_mismatch.store(0, Ordering::Relaxed);
        c.retried.store(0, Ordering::Relaxed);
        c.unended_bodies.store(0, Ordering::Relaxed);
        c.connections_at_start.store(
            self.shared.connections.opened.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(s) = &self.scraper {
            s.begin().await;
        }
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let exchange = Exchange {
            shared: self.shared.clone(),
            asked: request.max_output_tokens,
            deadline: Instant::now() + self.shared.request_timeout,
            received: Arc::new(AtomicUsize::new(0)),
            phase: Phase::NotSent(request),
            usage: None,
            finish_seen: false,
        };
        futures::stream::unfold(exchange, |mut ex| async move {
            let event = match ex.next_event().await? {
                // Every failure's message passes here: a server that quotes the API key back,
                // or an error naming a URL with a credential in its query, stays redacted.
                StreamEvent::Error(mut error) => {
                    error.message = ex.shared.secrets.redact(&error.message);
                    StreamEvent::Error(error)
                }
                event => event,
            };
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
        let connections = ConnectionFigures {
            opened: self.shared.connections.opened.load(Ordering::Relaxed)
                - c.connections_at_start.load(Ordering::Relaxed),
            retried_requests: c.retried.load(Ordering::Relaxed) as u64,
        };
        let in_flight = self.in_flight_target.load(Ordering::Relaxed);
        if in_flight > 0 && connections.opened > 2 && connections.opened as usize > finished / 4 {
            tracing::warn!(
                "{} new connections for {finished} requests with {in_flight} in flight: the server closed connections the client keeps alive, so many requests' TTFT includes opening a connection",
                connections.opened
            );
        }
        let unended = c.unended_bodies.load(Ordering::Relaxed);
        if unended > 0 {
            tracing::warn!(
                "{unended} of {finished} answers did not end within {} ms of [DONE], so their connections were closed instead of reused",
                BODY_END_LIMIT.as_millis()
            );
        }
        if connections.retried_requests > 0 {
            tracing::warn!(
                "{} of {finished} requests were sent again on a fresh connection: the server closed the reused connection they went out on before answering (counted as retried_requests; timed from the first attempt)",
                connections.retried_requests
            );
        }
        let mut figures = match &self.scraper {
            Some(s) => s.end().await,
            None => EngineFigures::default(),
        };
        figures.connections = Some(connections);
        Ok(figures)
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<body::BodyFault>>> + Send>>;

enum Phase {
    NotSent(GenerationRequest),
    Streaming(Events),
    /// `Done` was given; what is left of the body is read when the stream is polled again.
    Draining(Events),
    Finished,
}

/// One request's life: send, then read events until it is done or failed.
struct Exchange {
    shared: Arc<Shared>,
    /// Bytes of the answer's body received so far: the stall timeout waits for a byte, not for
    /// a whole event.
    received: Arc<AtomicUsize>,
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
                Phase::Draining(events) => {
                    self.shared.read_to_end(events).await;
                    return None;
                }
                Phase::NotSent(request) => {
                    match send(&self.shared, self.deadline, &request, &self.received).await {
                        Ok(events) => self.phase = Phase::Streaming(events),
                        Err(error) => return Some(StreamEvent::Error(error)),
                    }
                }
                Phase::Streaming(mut events) => {
                    // A wait that timed out while bytes still arrived (an event larger than what
                    // one stall period brings) waits on: only silence is a stall. Polling the
                    // stream again loses nothing; the parser keeps what it has buffered.
                    let next = loop {
                        let (limit, stalled) = self.wait_limit();
                        let before = self.received.load(Ordering::Relaxed);
                        match tokio::time::timeout_at(limit, events.next()).await {
                            Err(_) if stalled && self.received.load(Ordering::Relaxed) > before => {
                            }
                            Err(_) => break Err(stalled),
                            Ok(item) => break Ok(item),
                        }
                    };
                    self.phase = Phase::Streaming(events);
                    let event = match next {
                        Err(stalled) => {
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
                        Ok(Some(Err(EventStreamError::Transport(body::BodyFault::Transport(
                            e,
                        ))))) => {
                            return self.fail(
                                ErrorKind::Connection,
                                format!(
                                    "the connection broke mid-stream: {}",
                                    error_chain(&e.without_url())
                                ),
                            )
                        }
                        Ok(Some(Err(EventStreamError::Transport(fault)))) => {
                            return self.fail(ErrorKind::Protocol, fault.to_string())
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
        if let Phase::Streaming(events) = std::mem::replace(&mut self.phase, Phase::Finished) {
            self.phase = Phase::Draining(events);
        }
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

/// Longest wait for the end of a body after `[DONE]`.
const BODY_END_LIMIT: Duration = Duration::from_millis(500);

/// Most connections opened ahead of a workload's measured requests.
const MAX_PREOPENED: usize = 512;

/// Longest wait for each answer that opens a connection ahead of the measured requests.
const PREOPEN_LIMIT: Duration = Duration::from_secs(10);

impl Shared {
    /// Reads what is left of a finished answer's body: at least the HTTP/1.1 chunked
    /// terminator, which uvicorn (vLLM's server) sends in a write of its own after `[DONE]`.
    /// Only a body read to its end gives its connection back to the pool; a dropped one closes
    /// it, and the next request would pay for a new connection inside its TTFT. The request's
    /// end was stamped at `Done`; this runs when the runner polls the stream once more, before
    /// the same worker sends its next request.
    async fn read_to_end(&self, mut events: Events) {
        let rest = async { while events.next().await.is_some() {} };
        if tokio::time::timeout(BODY_END_LIMIT, rest).await.is_err() {
            self.counts.unended_bodies.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Makes sure `n` connections are open and idle in the pool, so the first `n` measured
    /// requests do not each pay for a handshake: `n` concurrent `GET /v1/models`, which reuse
    /// idle connections and open only the missing ones. Their answers are not used, and a
    /// server without that route still answers (404) on a kept connection.
    async fn open_connections(&self, n: usize) {
        let asks = (0..n.min(MAX_PREOPENED)).map(|_| async {
            let Ok(response) = self
                .client
                .get(&self.models_url)
                .timeout(PREOPEN_LIMIT)
                .send()
                .await
            else {
                return;
            };
            self.note_answered(&response);
            // Read to the end, so the connection goes back to the pool (a longer answer than
            // any model list closes it instead).
            let _ = body::read_capped(response, body::MODELS_BODY_LIMIT).await;
        });
        futures::future::join_all(asks).await;
        // A connect can outlive the answer it was started for (the pool gave that request a
        // connection that fell idle first) and still lands in the pool: wait for those too, so
        // none is counted among the measured requests' connections.
        let settled = async {
            let c = &self.connections;
            while c.ended.load(Ordering::Relaxed) < c.started.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(PREOPEN_LIMIT, settled).await;
    }

    /// Remembers the connection an answer came on, to tell a reused connection from a new one.
    fn note_answered(&self, response: &reqwest::Response) {
        if let Some(info) = response.extensions().get::<HttpInfo>() {
            self.answered_on
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(info.local_addr());
        }
    }

    /// True when `error` says the server closed the connection before any byte of its answer,
    /// and that connection had carried an answer before: a kept-alive connection the server
    /// dropped as the request went out. A new connection closed that way is a server refusing
    /// the request, not a stale connection, and is not retried.
    fn closed_on_reuse(&self, error: &reqwest::Error) -> bool {
        if error.is_connect() || error.is_timeout() {
            return false;
        }
        let mut local = None;
        let mut closed = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            if let Some(client_error) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
                if let Some(connected) = client_error.connect_info() {
                    let mut extras = http::Extensions::new();
                    connected.get_extras(&mut extras);
                    local = extras.get::<HttpInfo>().map(HttpInfo::local_addr);
                }
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                closed |= h.is_incomplete_message();
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                closed |= matches!(
                    io.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                );
            }
            cause = e.source();
        }
        closed
            && local.is_some_and(|addr| {
                self.answered_on
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&addr)
            })
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
    received: &Arc<AtomicUsize>,
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
    let body: bytes::Bytes = serde_json::to_vec(&body)
        .map_err(|e| RequestError::new(ErrorKind::Protocol, format!("cannot encode request: {e}")))?
        .into();
    let post = |client: &reqwest::Client| {
        client
            .post(&shared.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body.clone())
            .send()
    };
    let (mut limit, mut stalled) = wait_limit(shared, deadline);
    let mut sent = tokio::time::timeout_at(limit, post(&shared.client)).await;
    if let Ok(Err(e)) = &sent {
        // The server closed a kept-alive connection as the request went out on it (llama.cpp's
        // server closes every connection after its answer, other servers on an idle timeout):
        // the request never reached it, so it is sent once more, on a new connection. Its times
        // still count from the first attempt, as the user waited through both.
        if shared.closed_on_reuse(e) {
            shared.counts.retried.fetch_add(1, Ordering::Relaxed);
            (limit, stalled) = wait_limit(shared, deadline);
            sent = tokio::time::timeout_at(limit, post(&shared.fresh_client)).await;
        }
    }
    let response = match sent {
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
                format!(
                    "{what} {}: {}",
                    shared.shown_endpoint,
                    error_chain(&e.without_url())
                ),
            ));
        }
        Ok(Ok(r)) => r,
    };
    shared.note_answered(&response);
    let status = response.status();
    if !status.is_success() {
        let (limit, _) = wait_limit(shared, deadline);
        let text =
            tokio::time::timeout_at(limit, body::read_capped(response, body::ERROR_BODY_LIMIT))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|(text, _)| text)
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
    Ok(
        body::line_limited(response.bytes_stream(), received.clone())
            .eventsource()
            .boxed(),
    )
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
