//! Any OpenAI-compatible streaming server: vLLM, SGLang, LMDeploy, TGI, llama.cpp's server,
//! Ollama. `vllm`, `sglang`, `lmdeploy` and `llamacpp` are presets of this one backend (a
//! default address and the metric names to scrape), not separate code paths.
//!
//! Each request is a streamed `POST /v1/completions` (or `/v1/chat/completions`) read as
//! server-sent events (`sse.rs`: events split across TCP reads, every kind of line end,
//! comment lines, framed in place, once a line, since this runs for every chunk of every
//! request). One `reqwest` client
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
pub(crate) mod sse;
pub(crate) mod stream;
pub mod token_counter;
mod tokenize;

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
use self::tokenize::{Cuts, Dialect, ServerTokenizer};
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
    /// The server's `/tokenize`, probed at the first workload.
    server_tokenizer: Mutex<Probe>,
    /// A client of its own for `/tokenize`: its calls must neither take the requests' pooled
    /// connections nor count among them.
    tokenize_client: reqwest::Client,
    tokenize_url: String,
    /// The current workload's prompts as the server's `/tokenize` cut or counted them: the text
    /// the workload built, to the text sent and its length in the server's tokens.
    cuts: Mutex<Arc<Cuts>>,
}

/// A prompt as the server's `/tokenize` cut or counted it: the text sent, its tokens.
type Cut = (String, usize);

/// What the probe of `/tokenize` found.
enum Probe {
    /// Not probed yet (or `--no-tokenize`, which never probes).
    NotYet,
    /// No usable endpoint; said once.
    Absent,
    Present(Arc<ServerCounter>),
}

/// Counts output through the server's `/tokenize`, for requests that ended without `usage`.
struct ServerCounter {
    tokenizer: ServerTokenizer,
    /// The run's runtime, which the tokenizer's client belongs to.
    runtime: tokio::runtime::Handle,
}

impl super::CountTokens for ServerCounter {
    /// Called off the runtime's workers, after the request's last stamp (see the runner): the
    /// call to the server runs on a thread of its own, which may block on the run's runtime.
    fn count(&self, text: &str) -> Option<usize> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| self.runtime.block_on(self.tokenizer.count(text)))
                .join()
        })
        .ok()?
        .ok()
    }

    fn counter(&self) -> super::Counter {
        super::Counter::Server
    }
}

/// A prompt's length as the server counts it differs from the workload's by more than both
/// this share of the workload's and [`PROMPT_MISMATCH_TOKENS`] (AIPerf's bounds).
const PROMPT_MISMATCH_FRACTION: f64 = 0.05;
const PROMPT_MISMATCH_TOKENS: usize = 50;

/// Whether `counted` (the server's) is off from `expected` (the workload's) by more than both
/// bounds.
pub(crate) fn prompt_mismatch(expected: usize, counted: usize) -> bool {
    let off = expected.abs_diff(counted);
    off > PROMPT_MISMATCH_TOKENS && off as f64 > PROMPT_MISMATCH_FRACTION * expected as f64
}

/// Prompts cut or counted through `/tokenize` at once, before a workload.
const TOKENIZE_IN_FLIGHT: usize = 8;

/// Most prompts a workload has cut or counted through `/tokenize`: each is held in memory, as
/// built and as cut, while the workload runs (the runner builds prompts as it sends them).
const MOST_CUT_PROMPTS: usize = 100_000;

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
    /// Requests whose `usage.prompt_tokens` is off from the prompt's length as sent by more
    /// than the bounds of [`prompt_mismatch`]; the first one's (sent, counted).
    prompt_mismatch: AtomicUsize,
    prompt_mismatch_example: Mutex<Option<(usize, usize)>>,
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
            server_tokenizer: Mutex::new(match config.no_tokenize {
                true => Probe::Absent,
                false => Probe::NotYet,
            }),
            tokenize_client: build_client()?,
            tokenize_url: with_query_of(format!("{root}/tokenize"), &base),
            cuts: Mutex::new(Arc::new(Cuts::default())),
        })
    }

    /// The server's `/tokenize`, probed on the first call (outside any measured time: from
    /// `start_workload`); `None` when it has none that answers sanely, or `--no-tokenize`.
    async fn server_tokenizer(&self) -> Option<Arc<ServerCounter>> {
        let state = |s: &Probe| match s {
            Probe::NotYet => None,
            Probe::Absent => Some(None),
            Probe::Present(c) => Some(Some(c.clone())),
        };
        if let Some(known) = state(
            &self
                .server_tokenizer
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ) {
            return known;
        }
        let preferred = match self.preset.name {
            "llamacpp" => Dialect::LlamaCpp,
            _ => Dialect::Vllm,
        };
        let shown_url = shown(&self.tokenize_url);
        let probed = ServerTokenizer::probe(
            self.tokenize_client.clone(),
            self.tokenize_url.clone(),
            shown_url.clone(),
            self.model.clone(),
            preferred,
        )
        .await;
        let found = match probed {
            Ok(tokenizer) => {
                tracing::info!(
                    "{} answers in the {} shape: synthetic prompts are cut to their exact token count through it, and output without a usage block is counted by it",
                    tokenizer.shown_url(),
                    tokenizer.dialect().name()
                );
                Probe::Present(Arc::new(ServerCounter {
                    tokenizer,
                    runtime: tokio::runtime::Handle::current(),
                }))
            }
            Err(failure) => {
                let reasons = self.shared.secrets.redact(&failure.reasons);
                // A server without the endpoint is common (OpenAI's API, TGI); one that
                // answers it wrongly is worth a warning.
                if failure.absent {
                    tracing::info!(
                        "{shown_url} is not there ({}); prompt lengths are the workload's word counts",
                        printable(&reasons)
                    );
                } else {
                    tracing::warn!(
                        "{shown_url} gives no usable token counts ({}); it is not used: prompt lengths are the workload's word counts, and output without a usage block is counted without it",
                        printable(&reasons)
                    );
                }
                Probe::Absent
            }
        };
        let mut slot = self
            .server_tokenizer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *slot = found;
        state(&slot).flatten()
    }

    /// The workload's prompts (warm-up and measured) as the server's tokenizer cuts them to
    /// their exact length (synthetic prompts) or counts them (given prompts, which are never
    /// changed), with a warning for given prompts whose count is off from the workload's.
    async fn cut_prompts(&self, counter: &ServerCounter, workload: &Workload) -> Cuts {
        // The turns of sessions and the requests of a trace are built as the run goes (each
        // turn on the answers before it), not from `Workload::prompt`: nothing to cut ahead.
        if workload.sessions.is_some() || workload.trace.is_some() {
            tracing::debug!(
                "workload {}: multi-turn and trace prompts are not cut through /tokenize",
                workload.name
            );
            return Cuts::default();
        }
        let synthetic = workload.prompts.is_none();
        // Given prompts repeat after the last one (and warm-up takes them from the start).
        let indices: Vec<(usize, bool)> = match &workload.prompts {
            Some(given) => (0..given
                .len()
                .min(workload.num_requests.max(workload.warmup_requests)))
                .map(|i| (i, false))
                .collect(),
            None => (0..workload.warmup_requests)
                .map(|i| (i, true))
                .chain((0..workload.num_requests).map(|i| (i, false)))
                .collect(),
        };
        if indices.len() > MOST_CUT_PROMPTS {
            tracing::warn!(
                "workload {}: {} prompts are more than the {MOST_CUT_PROMPTS} cut through {} before a workload (they would all be held in memory); they are sent as the workload built them",
                workload.name,
                indices.len(),
                counter.tokenizer.shown_url()
            );
            return Cuts::default();
        }
        let mut prompts: Vec<crate::workload::Prompt> = indices
            .into_iter()
            .map(|(i, warmup)| workload.prompt(i, warmup))
            .collect();
        prompts.sort_by(|a, b| a.text.cmp(&b.text));
        prompts.dedup_by(|a, b| a.text == b.text);
        let started = std::time::Instant::now();
        let tokenizer = &counter.tokenizer;
        let results: Vec<(crate::workload::Prompt, Result<Cut, String>)> =
            futures::stream::iter(prompts)
                .map(|prompt| async move {
                    let result = match synthetic {
                        true => {
                            let words: Vec<&str> = prompt.text.split(' ').collect();
                            tokenize::cut(tokenizer, &words, prompt.tokens).await
                        }
                        false => tokenizer
                            .count(&prompt.text)
                            .await
                            .map(|n| (prompt.text.clone(), n)),
                    };
                    (prompt, result)
                })
                .buffer_unordered(TOKENIZE_IN_FLIGHT)
                .collect()
                .await;
        let (mut failed, mut off, mut example) = (0, 0, None);
        let mut cuts = Cuts::default();
        for (prompt, result) in results {
            match result {
                Ok((text, n)) => {
                    let wrong = match synthetic {
                        true => n != prompt.tokens,
                        false => prompt_mismatch(prompt.tokens, n),
                    };
                    if wrong {
                        off += 1;
                        example.get_or_insert((prompt.tokens, n));
                    }
                    // A given prompt is only counted: it is sent as it is.
                    let sent = synthetic.then_some(text);
                    cuts.insert(prompt.text, sent, n);
                }
                Err(e) => {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!(
                            "{} failed for a prompt of workload {}: {}; such prompts are sent as the workload built them",
                            tokenizer.shown_url(),
                            workload.name,
                            printable(&self.shared.secrets.redact(&e))
                        );
                    }
                }
            }
        }
        let total = cuts.len() + failed;
        tracing::debug!(
            "workload {}: {total} prompts through /tokenize in {:.2} s",
            workload.name,
            started.elapsed().as_secs_f64()
        );
        if let Some((workload_count, server_count)) = example {
            match synthetic {
                true => tracing::warn!(
                    "workload {}: {off} of {total} prompts could not be cut to exactly their length through {} (e.g. {workload_count} asked, {server_count} reached); they are sent with the length reached",
                    workload.name,
                    tokenizer.shown_url()
                ),
                false => tracing::warn!(
                    "workload {}: for {off} of {total} prompts the server's tokenizer counts a length off from the workload's word count by more than 5 % and {PROMPT_MISMATCH_TOKENS} tokens (e.g. {workload_count} words, {server_count} tokens); the records take the server's usage counts where it sends them",
                    workload.name,
                ),
            }
        }
        cuts
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
        // Before the workload's clock starts: no call of /tokenize lands in a latency.
        let cuts = match self.server_tokenizer().await {
            Some(counter) => self.cut_prompts(&counter, workload).await,
            None => Cuts::default(),
        };
        *self.cuts.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(cuts);
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
        c.prompt_mismatch.store(0, Ordering::Relaxed);
        *c.prompt_mismatch_example
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        c.unended_bodies.store(0, Ordering::Relaxed);
        c.connections_at_start.store(
            self.shared.connections.opened.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if let Some(s) = &self.scraper {
            s.begin().await;
        }
    }

    fn generate(&self, mut request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let cut = match request.messages.is_empty() {
            true => cuts.get(&request.prompt),
            // A turn of a session goes out as its messages: it is never one of the cut prompts.
            false => None,
        };
        if let Some((sent, tokens)) = cut {
            if let Some(text) = sent {
                request.prompt = text.to_string();
            }
            request.prompt_tokens = tokens;
        }
        let exchange = Exchange {
            shared: self.shared.clone(),
            asked: request.max_output_tokens,
            prompt_tokens: request.prompt_tokens,
            deadline: Instant::now() + self.shared.request_timeout,
            received: Arc::new(AtomicUsize::new(0)),
            phase: Phase::NotSent(request),
            usage: None,
            finish_seen: false,
            pending: None,
            cached_prompt_tokens: None,
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
        // A local tokenizer first: it asks no server.
        if let Some(t) = &self.tokenizer {
            return Some(t.clone() as Arc<dyn super::CountTokens>);
        }
        match &*self
            .server_tokenizer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Probe::Present(counter) => Some(counter.clone() as Arc<dyn super::CountTokens>),
            Probe::NotYet | Probe::Absent => None,
        }
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        let c = &self.shared.counts;
        let finished = c.finished.load(Ordering::Relaxed);
        let without = c.without_usage.load(Ordering::Relaxed);
        let mismatch = c.length_mismatch.load(Ordering::Relaxed);
        let asked = *self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let server = self.output_token_counter().is_some() && self.tokenizer.is_none();
        match (&self.tokenizer, without) {
            (_, 0) => {}
            (None, _) if server => tracing::warn!(
                "{without} of {finished} requests ended without a usage block; their output length was counted by the server's /tokenize"
            ),
            (Some(tokenizer), _) => tracing::warn!(
                "{without} of {finished} requests ended without a usage block; their output length was counted by tokenizing the streamed text with {}",
                tokenizer.path().display()
            ),
            (None, _) => tracing::warn!(
                "{without} of {finished} requests ended without a usage block; their output length is one token per streamed chunk, which undercounts chunks holding several tokens (give --tokenizer PATH to count them with the model's tokenizer.json)"
            ),
        }
        let prompt_off = c.prompt_mismatch.load(Ordering::Relaxed);
        let example = *c
            .prompt_mismatch_example
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let (true, Some((sent, counted))) = (prompt_off > 0, example) {
            let why = match (self.shared.api, self.output_token_counter().is_some()) {
                (Api::Chat, _) => "the chat template adds tokens around the message",
                (Api::Completions, true) => "the server's tokenizer counted the prompt differently when it was cut",
                (Api::Completions, false) => "without the server's /tokenize, a prompt's length is the workload's word count, not the model's tokens",
            };
            tracing::warn!(
                "{prompt_off} of {finished} requests: the server's usage.prompt_tokens is off from the prompt's length as sent by more than 5 % and {PROMPT_MISMATCH_TOKENS} tokens (e.g. {sent} sent, {counted} counted): {why}. The records take the server's count"
            );
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
