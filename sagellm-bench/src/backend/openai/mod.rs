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
mod config;
mod connections;
mod exchange;
pub mod prometheus;
mod proxy;
pub(crate) mod stream;
pub mod token_counter;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use tokio::time::Instant;

use self::config::{check_url, split_base_url, with_query_of, ApiKey};
pub use self::config::{preset, Api, OpenAiConfig, Preset, MAX_TIMEOUT, PRESETS};
use self::connections::{Connects, BODY_END_LIMIT};
use self::exchange::{Exchange, Phase};
use self::prometheus::Scraper;
use self::token_counter::TokenCounter;
use super::secrets::{self, shown};
use super::{
    Backend, BackendError, ConnectionFigures, EngineFigures, GenerationRequest, StreamEvent,
};
use crate::workload::Workload;

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
    /// The header each request's session id goes in (`--session-header`), checked.
    session_header: Option<reqwest::header::HeaderName>,
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
    retried: AtomicUsize,
    /// Answers whose body had not ended `BODY_END_LIMIT` after `[DONE]`; their connections
    /// were closed.
    unended_bodies: AtomicUsize,
    /// `Shared::connections` when the measured requests began.
    connections_at_start: AtomicU64,
}

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
        let session_header = config
            .session_header
            .as_deref()
            .map(|name| {
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    BackendError::Setup(format!(
                        "--session-header `{name}` is not an HTTP header name (letters, digits and `-`, e.g. X-Session-ID)"
                    ))
                })
            })
            .transpose()?;
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
            "session_header": config.session_header,
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
                session_header,
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
                    let chain = error_chain(&e.without_url());
                    let hint = exchange::scheme_hint(&url, &chain);
                    format!("cannot reach {shown_url}: {chain}{hint}")
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
