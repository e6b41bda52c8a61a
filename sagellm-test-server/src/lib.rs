//! A scripted OpenAI-compatible streaming server on 127.0.0.1, for testing sagellm-bench.
//!
//! It answers `/v1/completions` and `/v1/chat/completions` with server-sent events shaped as
//! vLLM sends them (a role-only first chunk for chat, `: ` comment lines, usage in a chunk with
//! empty `choices`, `data: [DONE]`), on a [`Script`] that fixes the time to the first token, the
//! gap between chunks, the tokens per chunk, and faults for chosen requests. `/v1/models` names
//! the served model, and `/metrics` exposes Prometheus text with vLLM's metric names.
//!
//! A reasoning phase ([`Script::reasoning_tokens`], chat only): the first tokens of each answer
//! stream as `delta.reasoning_content` (or `delta.reasoning`, [`ReasoningField`]) chunks at
//! their own pace, then the answer follows as `delta.content`, as vLLM and SGLang stream a
//! reasoning model's output. Reasoning chunk k is due at `ttft + k * reasoning_itl`, answer
//! chunk j at `ttft + R * reasoning_itl + j * itl` with `R` reasoning chunks: the first output
//! (answer) token is due `ttft + R * reasoning_itl` after the request. Reasoning tokens are part
//! of `max_tokens` and of `usage.completion_tokens`, as a real server counts them.
//!
//! Tokens: a prompt's tokens are its whitespace-separated words, each
//! [`Script::tokens_per_word`] tokens; `POST /tokenize` counts the same way (vLLM's body
//! `{"model", "prompt"}` answered `{"count", "tokens", "max_model_len"}`, llama.cpp's
//! `{"content"}` answered `{"tokens"}`), so it agrees with the usage blocks, unless
//! [`Script::tokenize`] makes it absent or lie.
//!
//! Timing: each chunk is sent at an absolute deadline counted from the moment the handler
//! received the request (`ttft + k * itl`), so timer rounding never accumulates over a stream.
//! tokio's timer rounds each deadline up to the next millisecond, so every scripted instant is
//! met within `[t, t + 1 ms]` plus scheduling delay.
//!
//! The server runs on its own thread and runtime, so it neither shares nor starves the
//! runtime of the client it is measured by.

pub mod framed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde::Deserialize;
use tokio::time::Instant;

/// What the server does with each request.
#[derive(Debug, Clone)]
pub struct Script {
    /// The served model name, as `/v1/models` reports it.
    pub model: String,
    /// From receiving a request to sending its first content chunk.
    pub ttft: Duration,
    /// Between consecutive content chunks.
    pub itl: Duration,
    /// Tokens carried by each content chunk (the last chunk carries the remainder).
    pub tokens_per_chunk: usize,
    /// Output tokens per request; `None` sends exactly the `max_tokens` asked for.
    pub completion_tokens: Option<usize>,
    /// Where the usage block goes, when the client asks for it with `include_usage`.
    pub usage: UsagePlacement,
    /// Faults by request number (0-based, in the order generation requests arrive).
    pub faults: HashMap<usize, Fault>,
    /// When set, requests without `Authorization: Bearer <key>` get HTTP 401.
    pub api_key: Option<String>,
    /// KV-cache capacity in tokens that `/metrics` reports (block size 16).
    pub kv_capacity_tokens: u64,
    /// Fraction of prompt tokens `/metrics` counts as prefix-cache hits.
    pub prefix_hit_fraction: f64,
    /// Fraction of output tokens `/metrics` counts as accepted speculative drafts (one draft
    /// token proposed per output token); 0 leaves the speculation counters out.
    pub spec_accept_fraction: f64,
    /// Time each request waits, as in a server's queue, before its stream is planned; it is
    /// part of the TTFT, and `/metrics` reports it in `vllm:request_queue_time_seconds`.
    pub queue_time: Duration,
    /// A scripted capacity: at most this many requests stream at once; the others wait, in
    /// arrival order, for one to end, and the wait is part of their TTFT (as in an engine whose
    /// batch is full). `None`: no limit.
    pub max_running: Option<usize>,
    /// Of each chat answer's tokens, how many lead it as reasoning (at most all but one).
    pub reasoning_tokens: usize,
    /// Between consecutive reasoning chunks (the first is due at `ttft`).
    pub reasoning_itl: Duration,
    /// The delta field reasoning chunks use.
    pub reasoning_field: ReasoningField,
    /// Tokens each whitespace-separated word of a prompt counts as, in usage blocks and
    /// `/tokenize` alike.
    pub tokens_per_word: usize,
    /// How `POST /tokenize` answers.
    pub tokenize: Tokenize,
    /// Whether each stream opens with a `: ping` comment line, in a write of its own, before
    /// any chunk (true by default: clients must skip it). vLLM's server sends none, and
    /// vLLM's Rust client `vllm-bench` fails every request that begins with one (it trims
    /// each read's whitespace, so the comment's blank line is lost and it swallows the
    /// events after it); false lets that client be measured.
    pub comment_first: bool,
}

/// The delta field of reasoning chunks, as servers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningField {
    /// `delta.reasoning_content` (DeepSeek, vLLM, SGLang).
    ReasoningContent,
    /// `delta.reasoning` (newer vLLM, Ollama).
    Reasoning,
}

impl ReasoningField {
    fn name(self) -> &'static str {
        match self {
            ReasoningField::ReasoningContent => "reasoning_content",
            ReasoningField::Reasoning => "reasoning",
        }
    }
}

/// How `POST /tokenize` answers: honestly, or as the broken servers a client must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenize {
    /// The prompt's tokens, counted as the usage blocks count them.
    Words,
    /// HTTP 404, as a server without the endpoint.
    Missing,
    /// HTTP 200 with a body that is not JSON.
    NotJson,
    /// HTTP 200 with JSON of another shape (no `count`, no `tokens`).
    WrongShape,
    /// HTTP 200 with a count no prompt has (2^40 tokens).
    Absurd,
    /// HTTP 200 saying every text has no token at all.
    Zero,
    /// The right count in `count` and a `tokens` list of another length.
    Inconsistent,
    /// A sane-looking answer that counts every word twice, against the usage blocks' once.
    Doubled,
}

impl Script {
    /// The default script with this time to the first chunk and between chunks, in ms: what
    /// most tests need of a server.
    pub fn paced(ttft_ms: u64, itl_ms: u64) -> Self {
        Script {
            ttft: Duration::from_millis(ttft_ms),
            itl: Duration::from_millis(itl_ms),
            ..Script::default()
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Script {
            model: "test-model".to_string(),
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(5),
            tokens_per_chunk: 1,
            completion_tokens: None,
            usage: UsagePlacement::SeparateChunk,
            faults: HashMap::new(),
            api_key: None,
            kv_capacity_tokens: 16 * 4096,
            prefix_hit_fraction: 0.25,
            spec_accept_fraction: 0.0,
            queue_time: Duration::ZERO,
            max_running: None,
            reasoning_tokens: 0,
            reasoning_itl: Duration::from_millis(5),
            reasoning_field: ReasoningField::ReasoningContent,
            tokens_per_word: 1,
            tokenize: Tokenize::Words,
            comment_first: true,
        }
    }
}

/// Where the usage block goes in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsagePlacement {
    /// A final chunk with empty `choices` (vLLM, SGLang, OpenAI).
    SeparateChunk,
    /// In the last chunk that has choices (some llama.cpp and LMDeploy versions).
    LastChunk,
    /// Never sent.
    Omitted,
}

/// A fault to inject into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a JSON error body instead of a stream.
    Status(u16),
    /// Break the connection after this many content chunks.
    DisconnectAfter(usize),
    /// Send a chunk that is not valid JSON after this many content chunks.
    MalformedAfter(usize),
    /// Stop sending (but keep the connection open) after this many content chunks.
    StallAfter(usize),
}

/// A running server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1 with `worker_threads` runtime threads.
    pub fn start(script: Script, worker_threads: usize) -> std::io::Result<TestServer> {
        Self::start_on(0, script, worker_threads)
    }

    /// Starts a server on `port` of 127.0.0.1 (0: any free port).
    pub fn start_on(
        port: u16,
        script: Script,
        worker_threads: usize,
    ) -> std::io::Result<TestServer> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let slots = script
            .max_running
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        let state = Arc::new(ServerState {
            slots,
            script,
            requests: AtomicUsize::new(0),
            tokenize_requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name("test-server")
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(state.clone());
        let accepted = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Without TCP_NODELAY, Nagle's algorithm holds each small chunk until the
                    // client's delayed ACK (~40 ms) arrives, which would swamp the scripted TTFT.
                    // Real servers (uvicorn, llama-server) set it too.
                    let listener = listener.tap_io(move |tcp| {
                        accepted.connections.fetch_add(1, Ordering::Relaxed);
                        let _ = tcp.set_nodelay(true);
                    });
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    if let Err(e) = serve.await {
                        eprintln!("test server stopped: {e}");
                    }
                });
                // Streams still sleeping (stalled on purpose) are dropped, not awaited.
                runtime.shutdown_background();
            })?;
        Ok(TestServer {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the server's root.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Generation requests received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The most generation requests that were running at once so far, from when each was
    /// received to when its stream ended or its client hung up.
    pub fn peak_running(&self) -> u64 {
        self.state.counters.peak_running.load(Ordering::Relaxed)
    }

    /// TCP connections accepted so far, on every path: what a client's connection reuse is
    /// judged by (a client that keeps its connections opens about one per request in flight).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// `POST /tokenize` requests received so far.
    pub fn tokenize_requests(&self) -> usize {
        self.state.tokenize_requests.load(Ordering::Relaxed)
    }

    /// Mean time from receiving a request to handing its first content chunk to the connection,
    /// over the requests that got that far: the server's own TTFT.
    pub fn mean_server_ttft(&self) -> Option<Duration> {
        let c = &self.state.counters;
        let n = c.first_chunks.load(Ordering::Relaxed);
        (n > 0).then(|| Duration::from_nanos(c.ttft_ns_total.load(Ordering::Relaxed) / n))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for open connections; a client that keeps one alive must not
        // hang the test, so the thread is joined only briefly.
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

struct ServerState {
    script: Script,
    /// The streams that may run at once, when the script limits them.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    requests: AtomicUsize,
    tokenize_requests: AtomicUsize,
    /// TCP connections accepted.
    connections: AtomicUsize,
    counters: Counters,
}

/// What `/metrics` reports, kept as vLLM counts it.
#[derive(Default)]
struct Counters {
    running: AtomicU64,
    /// The most requests ever running at once (a client's concurrency, seen from here).
    peak_running: AtomicU64,
    kv_tokens: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    prefix_queries: AtomicU64,
    prefix_hits: AtomicU64,
    spec_draft: AtomicU64,
    spec_accepted: AtomicU64,
    successes: AtomicU64,
    ttft_ns_total: AtomicU64,
    first_chunks: AtomicU64,
    queued_ns_total: AtomicU64,
    queued: AtomicU64,
}

fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .with_state(state)
}

#[derive(Deserialize)]
struct GenerationBody {
    #[serde(default)]
    prompt: Option<Prompt>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// A completion's prompt: text, or token ids as vLLM also takes them (vLLM's own benchmark
/// clients send ids with `--prompt-token-ids`, which skips its tokenizer round trip).
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Ids(Vec<u64>),
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

async fn completions(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(state, headers, body, false).await
}

async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(state, headers, body, true).await
}

fn error_response(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": "test_server_error", "code": status.as_u16()}
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn generate(
    state: Arc<ServerState>,
    headers: HeaderMap,
    body: Bytes,
    chat: bool,
) -> Response {
    let received = Instant::now();
    let script = &state.script;
    if let Some(key) = &script.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {key}").as_str()) {
            return error_response(StatusCode::UNAUTHORIZED, "missing or wrong API key");
        }
    }
    let request: GenerationBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")),
    };
    // A full server: wait for a stream to end (the semaphore is fair: first come, first
    // served). The stream's schedule starts once admitted.
    let slot = match &state.slots {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    let admitted = Instant::now();
    if !script.queue_time.is_zero() {
        tokio::time::sleep(script.queue_time).await;
    }
    state
        .counters
        .queued_ns_total
        .fetch_add(script.queue_time.as_nanos() as u64, Ordering::Relaxed);
    state.counters.queued.fetch_add(1, Ordering::Relaxed);
    let number = state.requests.fetch_add(1, Ordering::Relaxed);
    let fault = script.faults.get(&number).copied();
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, "scripted failure");
    }
    if !request.stream {
        return error_response(
            StatusCode::BAD_REQUEST,
            "this test server only streams; set \"stream\": true",
        );
    }
    let prompt_tokens = match (&request.prompt, &request.messages) {
        // Ids are tokens already.
        (Some(Prompt::Ids(ids)), _) => ids.len(),
        (Some(Prompt::Text(p)), _) => words(p) * script.tokens_per_word.max(1),
        (None, Some(m)) => {
            m.iter().map(|m| words(&m.content)).sum::<usize>() * script.tokens_per_word.max(1)
        }
        (None, None) => {
            return error_response(StatusCode::BAD_REQUEST, "neither prompt nor messages given")
        }
    };
    let prompt_tokens = prompt_tokens as u64;
    let output_tokens = script
        .completion_tokens
        .unwrap_or(request.max_tokens.unwrap_or(16))
        .max(1);
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let reasoning_tokens = match chat {
        true => script.reasoning_tokens.min(output_tokens - 1),
        false => 0,
    };

    let c = &state.counters;
    let running = c.running.fetch_add(1, Ordering::Relaxed) + 1;
    c.peak_running.fetch_max(running, Ordering::Relaxed);
    c.kv_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
    c.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
    c.prefix_queries.fetch_add(prompt_tokens, Ordering::Relaxed);
    c.prefix_hits.fetch_add(
        (prompt_tokens as f64 * script.prefix_hit_fraction).floor() as u64,
        Ordering::Relaxed,
    );

    let plan = StreamPlan {
        state: state.clone(),
        chat,
        received,
        admitted,
        slot,
        prompt_tokens,
        output_tokens,
        reasoning_tokens,
        include_usage,
        fault,
        step: Step::Start,
        chunks_sent: 0,
        tokens_sent: 0,
        finished: false,
    };
    let stream = futures::stream::unfold(plan, |mut plan| async move {
        let frame = plan.next_frame().await?;
        Some((frame, plan))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Content,
    Usage,
    Done,
    End,
}

/// One request's stream, frame by frame.
struct StreamPlan {
    state: Arc<ServerState>,
    chat: bool,
    received: Instant,
    /// When the stream got its slot (`received` without a capacity limit).
    admitted: Instant,
    /// The slot this stream holds while it runs, under a capacity limit.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    prompt_tokens: u64,
    output_tokens: usize,
    /// The leading output tokens sent as reasoning.
    reasoning_tokens: usize,
    include_usage: bool,
    fault: Option<Fault>,
    step: Step,
    chunks_sent: usize,
    tokens_sent: usize,
    /// True once the request's tokens left the KV-cache counters.
    finished: bool,
}

type Frame = Result<Bytes, std::io::Error>;

impl StreamPlan {
    async fn next_frame(&mut self) -> Option<Frame> {
        let state = self.state.clone();
        let script = &state.script;
        if self.step == Step::Start && !script.comment_first && !self.chat {
            // Nothing to send ahead of the first token.
            self.step = Step::Content;
        }
        match self.step {
            Step::Start => {
                self.step = Step::Content;
                // A comment line and, for chat, a role-only chunk before any token, as servers
                // send them: neither may count as the first token.
                let mut frame = match script.comment_first {
                    true => b": ping\n\n".to_vec(),
                    false => Vec::new(),
                };
                if self.chat {
                    frame.extend(self.chunk(Some(r#"{"role":"assistant","content":""}"#), None));
                }
                Some(Ok(Bytes::from(frame)))
            }
            Step::Content => {
                // Faults strike when the chunk they replace was due, so the chunks before
                // them have left the server.
                let per_chunk = script.tokens_per_chunk.max(1);
                let reasoning_chunks = self.reasoning_tokens.div_ceil(per_chunk);
                let thinking = self.tokens_sent < self.reasoning_tokens;
                let due = match thinking {
                    true => script.reasoning_itl * self.chunks_sent as u32,
                    false => {
                        script.reasoning_itl * reasoning_chunks as u32
                            + script.itl * (self.chunks_sent - reasoning_chunks) as u32
                    }
                };
                let deadline = self.admitted + script.queue_time + script.ttft + due;
                if deadline > Instant::now() {
                    tokio::time::sleep_until(deadline).await;
                }
                match self.fault {
                    Some(Fault::DisconnectAfter(k)) if self.chunks_sent == k => {
                        self.release();
                        self.step = Step::End;
                        return Some(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "scripted disconnect",
                        )));
                    }
                    Some(Fault::MalformedAfter(k)) if self.chunks_sent == k => {
                        // Carry on after the bad chunk, as a buggy server would.
                        self.fault = None;
                        return Some(Ok(Bytes::from_static(
                            b"data: {\"choices\": [{\"text\": \"broken\n\n",
                        )));
                    }
                    Some(Fault::StallAfter(k)) if self.chunks_sent == k => {
                        self.release();
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return None;
                    }
                    _ => {}
                }
                // A chunk is all reasoning or all answer.
                let left = match thinking {
                    true => self.reasoning_tokens - self.tokens_sent,
                    false => self.output_tokens - self.tokens_sent,
                };
                let tokens = per_chunk.min(left);
                let text = match thinking {
                    true => "think ".repeat(tokens),
                    false => "tok ".repeat(tokens),
                };
                let last = self.tokens_sent + tokens == self.output_tokens;
                let c = &self.state.counters;
                if self.chunks_sent == 0 {
                    c.ttft_ns_total
                        .fetch_add(self.received.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    c.first_chunks.fetch_add(1, Ordering::Relaxed);
                }
                c.kv_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
                c.generation_tokens
                    .fetch_add(tokens as u64, Ordering::Relaxed);
                if script.spec_accept_fraction > 0.0 {
                    c.spec_draft.fetch_add(tokens as u64, Ordering::Relaxed);
                    c.spec_accepted.fetch_add(
                        (tokens as f64 * script.spec_accept_fraction).floor() as u64,
                        Ordering::Relaxed,
                    );
                }
                self.chunks_sent += 1;
                self.tokens_sent += tokens;
                let delta = match (self.chat, thinking) {
                    // vLLM sends the other field as null beside the one that carries text.
                    (true, true) => format!(
                        r#"{{"content":null,"{}":"{text}"}}"#,
                        script.reasoning_field.name()
                    ),
                    (true, false) => format!(r#"{{"content":"{text}"}}"#),
                    (false, _) => String::new(),
                };
                let finish = last.then_some("length");
                let mut frame = if self.chat {
                    self.chunk(Some(&delta), finish)
                } else {
                    self.text_chunk(&text, finish)
                };
                if last {
                    self.step = Step::Usage;
                    if self.include_usage && script.usage == UsagePlacement::LastChunk {
                        frame = self.with_usage(frame);
                    }
                }
                Some(Ok(Bytes::from(frame)))
            }
            Step::Usage => {
                self.step = Step::Done;
                self.release();
                self.state
                    .counters
                    .successes
                    .fetch_add(1, Ordering::Relaxed);
                if self.include_usage && script.usage == UsagePlacement::SeparateChunk {
                    let object = self.object();
                    let frame = format!(
                        "data: {{\"id\":\"cmpl-test\",\"object\":\"{object}\",\"model\":\"{}\",\"choices\":[],\"usage\":{}}}\n\n",
                        script.model,
                        self.usage_json()
                    );
                    return Some(Ok(Bytes::from(frame)));
                }
                self.step = Step::End;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Step::Done => {
                self.step = Step::End;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Step::End => None,
        }
    }

    fn object(&self) -> &'static str {
        if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    fn usage_json(&self) -> String {
        format!(
            "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}",
            self.prompt_tokens,
            self.tokens_sent,
            self.prompt_tokens + self.tokens_sent as u64
        )
    }

    /// A chat chunk. `choices[].index` is deliberately 1, not 0: clients must not trust it.
    fn chunk(&self, delta: Option<&str>, finish: Option<&str>) -> Vec<u8> {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"id\":\"chatcmpl-test\",\"object\":\"chat.completion.chunk\",\"model\":\"{}\",\"choices\":[{{\"index\":1,\"delta\":{},\"finish_reason\":{finish}}}]}}\n\n",
            self.state.script.model,
            delta.unwrap_or("{}")
        )
        .into_bytes()
    }

    fn text_chunk(&self, text: &str, finish: Option<&str>) -> Vec<u8> {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        format!(
            "data: {{\"id\":\"cmpl-test\",\"object\":\"text_completion\",\"model\":\"{}\",\"choices\":[{{\"index\":1,\"text\":\"{text}\",\"finish_reason\":{finish}}}]}}\n\n",
            self.state.script.model
        )
        .into_bytes()
    }

    /// Adds the usage block to the chunk just built.
    fn with_usage(&self, frame: Vec<u8>) -> Vec<u8> {
        let text = String::from_utf8_lossy(&frame);
        let body = text.trim_end().trim_end_matches('}');
        format!("{body},\"usage\":{}}}\n\n", self.usage_json()).into_bytes()
    }

    /// Takes this request's tokens out of the KV-cache and running gauges, once.
    fn release(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.slot = None;
        let c = &self.state.counters;
        c.running.fetch_sub(1, Ordering::Relaxed);
        c.kv_tokens.fetch_sub(
            self.prompt_tokens + self.tokens_sent as u64,
            Ordering::Relaxed,
        );
    }
}

impl Drop for StreamPlan {
    fn drop(&mut self) {
        // A client that hangs up mid-stream still frees its cache.
        self.release();
    }
}

/// Whitespace-separated words: the server's tokens, before `tokens_per_word`.
fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[derive(Deserialize)]
struct TokenizeBody {
    /// vLLM and SGLang name the text `prompt`.
    #[serde(default)]
    prompt: Option<String>,
    /// llama.cpp's server names it `content`.
    #[serde(default)]
    content: Option<String>,
}

/// `POST /tokenize`, as [`Script::tokenize`] says.
async fn tokenize(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    state.tokenize_requests.fetch_add(1, Ordering::Relaxed);
    let script = &state.script;
    let json = |value: serde_json::Value| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    let request: TokenizeBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")),
    };
    let (text, vllm) = match (request.prompt, request.content) {
        (Some(p), _) => (p, true),
        (None, Some(c)) => (c, false),
        (None, None) => return error_response(StatusCode::BAD_REQUEST, "no prompt or content"),
    };
    // Token ids: each word's bytes summed, once per token it counts as.
    let per_word = script.tokens_per_word.max(1);
    let ids: Vec<u64> = text
        .split_whitespace()
        .flat_map(|w| {
            let id = w.bytes().map(u64::from).sum::<u64>();
            (0..per_word as u64).map(move |k| id * 4 + k)
        })
        .collect();
    match script.tokenize {
        Tokenize::Missing => error_response(StatusCode::NOT_FOUND, "Not Found"),
        Tokenize::NotJson => "<html>tokens: many</html>".into_response(),
        Tokenize::WrongShape => json(serde_json::json!({"ids": ids, "n": ids.len()})),
        Tokenize::Absurd => json(serde_json::json!({"count": 1u64 << 40})),
        Tokenize::Zero => json(serde_json::json!({"count": 0, "tokens": []})),
        Tokenize::Inconsistent => json(serde_json::json!({
            "count": ids.len(),
            "tokens": &ids[..ids.len() / 2],
        })),
        Tokenize::Doubled => {
            let doubled: Vec<u64> = ids.iter().flat_map(|&id| [id, id]).collect();
            json(serde_json::json!({"count": doubled.len(), "tokens": doubled}))
        }
        Tokenize::Words if vllm => json(serde_json::json!({
            "count": ids.len(),
            "max_model_len": 32768,
            "tokens": ids,
        })),
        Tokenize::Words => json(serde_json::json!({"tokens": ids})),
    }
}

async fn models(State(state): State<Arc<ServerState>>) -> Response {
    let body = serde_json::json!({
        "object": "list",
        "data": [{"id": state.script.model, "object": "model", "owned_by": "sagellm-test-server"}]
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Prometheus text with vLLM's metric names, plus the process's real resident memory.
async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let c = &state.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let block_size = 16u64;
    let blocks = state.script.kv_capacity_tokens / block_size;
    let usage = if state.script.kv_capacity_tokens > 0 {
        get(&c.kv_tokens) as f64 / state.script.kv_capacity_tokens as f64
    } else {
        0.0
    };
    let model = &state.script.model;
    let mut text = String::new();
    let mut put = |name: &str, kind: &str, value: String| {
        text.push_str(&format!(
            "# HELP {name} {name}\n# TYPE {name} {kind}\n{name}{{model_name=\"{model}\"}} {value}\n"
        ));
    };
    put(
        "vllm:num_requests_running",
        "gauge",
        get(&c.running).to_string(),
    );
    put("vllm:kv_cache_usage_perc", "gauge", usage.to_string());
    put(
        "vllm:prompt_tokens_total",
        "counter",
        get(&c.prompt_tokens).to_string(),
    );
    put(
        "vllm:generation_tokens_total",
        "counter",
        get(&c.generation_tokens).to_string(),
    );
    put(
        "vllm:prefix_cache_queries_total",
        "counter",
        get(&c.prefix_queries).to_string(),
    );
    put(
        "vllm:prefix_cache_hits_total",
        "counter",
        get(&c.prefix_hits).to_string(),
    );
    put("vllm:num_preemptions_total", "counter", "0".to_string());
    put(
        "vllm:request_success_total",
        "counter",
        get(&c.successes).to_string(),
    );
    if state.script.spec_accept_fraction > 0.0 {
        put(
            "vllm:spec_decode_num_draft_tokens_total",
            "counter",
            get(&c.spec_draft).to_string(),
        );
        put(
            "vllm:spec_decode_num_accepted_tokens_total",
            "counter",
            get(&c.spec_accepted).to_string(),
        );
    }
    // vLLM's request histograms, as their sums and counts (one +Inf bucket): the scripted
    // queue time and the TTFT this server measured.
    let mut histogram = |name: &str, ns_total: &AtomicU64, count: &AtomicU64| {
        let (sum, n) = (get(ns_total) as f64 / 1e9, get(count));
        text.push_str(&format!(
            "# HELP {name} {name}\n# TYPE {name} histogram\n{name}_bucket{{le=\"+Inf\",model_name=\"{model}\"}} {n}\n{name}_sum{{model_name=\"{model}\"}} {sum}\n{name}_count{{model_name=\"{model}\"}} {n}\n"
        ));
    };
    histogram(
        "vllm:request_queue_time_seconds",
        &c.queued_ns_total,
        &c.queued,
    );
    histogram(
        "vllm:time_to_first_token_seconds",
        &c.ttft_ns_total,
        &c.first_chunks,
    );
    text.push_str(&format!(
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{block_size}\",num_gpu_blocks=\"{blocks}\"}} 1.0\n"
    ));
    // Not a vLLM metric: how a benchmark run from another process learns the connections this
    // server accepted (the scrape's own connection included).
    text.push_str(&format!(
        "# HELP test_server_connections_total TCP connections accepted.\n# TYPE test_server_connections_total counter\ntest_server_connections_total {}\n",
        state.connections.load(Ordering::Relaxed)
    ));
    if let Some(rss) = resident_bytes() {
        text.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// This process's resident memory, from /proc on Linux; `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// One HTTP/1.1 exchange on a connection of its own, read to the server's close.
    fn exchange(server: &TestServer, request: &str) -> String {
        let mut tcp = std::net::TcpStream::connect(server.addr()).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        answer
    }

    fn completion(body: &str) -> String {
        format!(
            "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn token_id_prompts_count_their_ids_and_the_leading_comment_can_be_left_out() {
        let script = Script {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens_per_word: 3,
            comment_first: false,
            ..Script::default()
        };
        let server = TestServer::start(script, 1).unwrap();
        let ids = r#"{"prompt":[5,6,7,8],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}"#;
        let answer = exchange(&server, &completion(ids));
        // Ids are tokens already: 4, not 4 words of 3 tokens each.
        assert!(
            answer.contains(r#""usage":{"prompt_tokens":4,"completion_tokens":2"#),
            "{answer}"
        );
        assert!(!answer.contains(": ping"), "{answer}");
        let text = r#"{"prompt":"a b","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}"#;
        let answer = exchange(&server, &completion(text));
        assert!(answer.contains(r#""prompt_tokens":6,"#), "{answer}");
        assert_eq!(server.connections(), 2);
        let metrics = exchange(
            &server,
            "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        // The scrape's own connection is the third.
        assert!(
            metrics.contains("\ntest_server_connections_total 3\n"),
            "{metrics}"
        );
    }

    #[test]
    fn by_default_a_stream_opens_with_a_comment() {
        let script = Script::paced(0, 0);
        let server = TestServer::start(script, 1).unwrap();
        let body = r#"{"prompt":"a","max_tokens":1,"stream":true}"#;
        let answer = exchange(&server, &completion(body));
        let (comment, data) = (answer.find(": ping"), answer.find("data: {"));
        assert!(comment.is_some() && comment < data, "{answer}");
    }
}
