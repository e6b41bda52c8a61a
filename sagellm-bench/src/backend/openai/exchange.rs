//! One request's exchange with the server: the body sent, the status checked, the events read
//! until `[DONE]`, an error or a timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::stream::{Stream, StreamExt};
use serde::Serialize;
use tokio::time::Instant;

use super::sse::{Event, SseError, SseStream};
use super::{body, clip, error_chain, stream, Api, Shared};
use crate::backend::{ErrorKind, GenerationRequest, RequestError, StreamEvent, Usage};

pub(super) type Events =
    Pin<Box<dyn Stream<Item = Result<Event, SseError<body::BodyFault>>> + Send>>;

pub(super) enum Phase {
    NotSent(GenerationRequest),
    Streaming(Events),
    /// `Done` was given; what is left of the body is read when the stream is polled again.
    Draining(Events),
    Finished,
}

/// One request's life: send, then read events until it is done or failed.
pub(super) struct Exchange {
    pub(super) shared: Arc<Shared>,
    /// Bytes of the answer's body received so far: the stall timeout waits for a byte, not for
    /// a whole event.
    pub(super) received: Arc<AtomicUsize>,
    pub(super) asked: usize,
    /// The prompt's length as sent, for the check of the server's `usage.prompt_tokens`.
    pub(super) prompt_tokens: usize,
    pub(super) deadline: Instant,
    pub(super) phase: Phase,
    pub(super) usage: Option<Usage>,
    pub(super) finish_seen: bool,
    /// The answer part of a chunk that carried reasoning and answer both, given right after
    /// its reasoning part (and so stamped at the same moment, give or take the runner's read).
    pub(super) pending: Option<StreamEvent>,
    /// Prompt tokens the server said it served from its prefix cache.
    pub(super) cached_prompt_tokens: Option<usize>,
}

/// The request body; the prompt is borrowed, the rest are small.
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<Message<'a>>>,
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

    pub(super) async fn next_event(&mut self) -> Option<StreamEvent> {
        if let Some(event) = self.pending.take() {
            return Some(event);
        }
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
                        Ok(Some(Err(SseError::Transport(body::BodyFault::Transport(e))))) => {
                            return self.fail(
                                ErrorKind::Connection,
                                format!(
                                    "the connection broke mid-stream: {}",
                                    error_chain(&e.without_url())
                                ),
                            )
                        }
                        Ok(Some(Err(SseError::Transport(fault)))) => {
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
                            if chunk.cached_prompt_tokens.is_some() {
                                self.cached_prompt_tokens = chunk.cached_prompt_tokens;
                            }
                            self.finish_seen |= chunk.finished;
                            let answer = (chunk.tokens > 0).then_some(StreamEvent::Tokens {
                                text: chunk.text,
                                tokens: chunk.tokens,
                            });
                            if chunk.reasoning_tokens > 0 {
                                // Thinking first: a chunk where it ends and the answer starts
                                // keeps that order.
                                self.pending = answer;
                                return Some(StreamEvent::Reasoning {
                                    text: chunk.reasoning_text,
                                    tokens: chunk.reasoning_tokens,
                                });
                            }
                            if answer.is_some() {
                                return answer;
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
        if let Some(u) = self.usage {
            if super::prompt_mismatch(self.prompt_tokens, u.prompt_tokens) {
                c.prompt_mismatch.fetch_add(1, Ordering::Relaxed);
                c.prompt_mismatch_example
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert((self.prompt_tokens, u.prompt_tokens));
            }
        }
        match self.usage {
            None => {
                c.without_usage.fetch_add(1, Ordering::Relaxed);
            }
            Some(u) if self.shared.force_output_length && u.completion_tokens != self.asked => {
                c.length_mismatch.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
        let done = StreamEvent::Done { usage: self.usage };
        match self.cached_prompt_tokens.take() {
            // What the server served from its prefix cache, just before the end.
            Some(tokens) => {
                self.pending = Some(done);
                Some(StreamEvent::PrefixCached { tokens })
            }
            None => Some(done),
        }
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

/// What a failed answer's body says, as much as `ERROR_BODY_LIMIT` holds and the wait limit
/// allows; empty when it cannot be read.
async fn error_body(shared: &Shared, deadline: Instant, response: reqwest::Response) -> String {
    let (limit, _) = wait_limit(shared, deadline);
    tokio::time::timeout_at(limit, body::read_capped(response, body::ERROR_BODY_LIMIT))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|(text, _)| text)
        .unwrap_or_default()
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
        // A conversation's turn sends its messages; a single prompt is one user message.
        messages: (shared.api == Api::Chat).then(|| {
            if request.messages.is_empty() {
                vec![Message {
                    role: "user",
                    content: &request.prompt,
                }]
            } else {
                request
                    .messages
                    .iter()
                    .map(|m| Message {
                        role: m.role.as_str(),
                        content: &m.content,
                    })
                    .collect()
            }
        }),
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
    let session = match (&shared.session_header, &request.session_id) {
        (Some(name), Some(id)) => Some((
            name.clone(),
            reqwest::header::HeaderValue::from_str(id).map_err(|_| {
                RequestError::new(
                    ErrorKind::Client,
                    format!("session id `{id}` cannot be sent in an HTTP header"),
                )
            })?,
        )),
        _ => None,
    };
    let post = |client: &reqwest::Client| {
        let mut post = client
            .post(&shared.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some((name, value)) = &session {
            post = post.header(name.clone(), value.clone());
        }
        post.body(body.clone()).send()
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
        Ok(Err(e)) if is_open_files_exhaustion(&e) => {
            return Err(RequestError::new(
                ErrorKind::Client,
                format!(
                    "this process ran out of file handles opening a connection to {} ({}): \
                     the client's own open-files limit, not a fault of the server; raise \
                     `ulimit -n` or lower --concurrency",
                    shared.shown_endpoint,
                    error_chain(&e.without_url())
                ),
            ));
        }
        Ok(Err(e)) => {
            let what = if e.is_connect() {
                "cannot connect to"
            } else {
                "sending the request failed for"
            };
            let chain = error_chain(&e.without_url());
            let hint = scheme_hint(&shared.endpoint, &chain);
            return Err(RequestError::new(
                ErrorKind::Connection,
                format!("{what} {}: {chain}{hint}", shared.shown_endpoint),
            ));
        }
        Ok(Ok(r)) => r,
    };
    shared.note_answered(&response);
    let status = response.status();
    if !status.is_success() {
        let text = error_body(shared, deadline, response).await;
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
    if let Some((fault, readable)) = not_an_event_stream(&response) {
        if !readable {
            return Err(RequestError::new(ErrorKind::Protocol, fault));
        }
        let text = error_body(shared, deadline, response).await;
        return Err(RequestError::new(
            ErrorKind::Protocol,
            format!("{fault}; it began: {}", clip(text.trim())),
        ));
    }
    Ok(
        SseStream::new(body::line_limited(response.bytes_stream(), received.clone()).boxed())
            .boxed(),
    )
}

/// Why a successful answer is not the event stream asked for, naming the cause: one JSON body
/// (a server that ignored `"stream": true`), an HTML page (a URL that is not the API), a
/// compressed body (the client asks for none and decodes none), or another type; and whether
/// the body is text worth quoting.
fn not_an_event_stream(response: &reqwest::Response) -> Option<(String, bool)> {
    let header = |name| {
        response.headers().get(name).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
    };
    if let Some(encoding) = header(reqwest::header::CONTENT_ENCODING) {
        if !encoding.is_empty() && encoding != "identity" {
            let fault = format!(
                "the server compressed its answer (Content-Encoding: {encoding}), which the \
                 client neither asked for nor decodes; turn compression off for the API (often \
                 a proxy's setting)"
            );
            return Some((fault, false));
        }
    }
    // No type at all is let through: the events decide.
    let kind = header(reqwest::header::CONTENT_TYPE)?;
    let essence = kind.split(';').next().unwrap_or("").trim().to_string();
    let fault = match essence.as_str() {
        "text/event-stream" => return None,
        "application/json" => {
            "the server answered with one JSON body (application/json), not a stream of events \
             (text/event-stream): it ignored `\"stream\": true`, and a latency benchmark needs \
             the tokens as they are made; check that the server (or a proxy before it) streams"
                .to_string()
        }
        "text/html" => {
            "the server answered with an HTML page (text/html), not a stream of events: \
             --base-url points at a web page, a login or a proxy's error page, not the API \
             (give the server's root or its /v1)"
                .to_string()
        }
        other => format!(
            "the server answered with `{other}`, not a stream of events (text/event-stream)"
        ),
    };
    let readable = essence.starts_with("text/") || essence.ends_with("json");
    Some((fault, readable))
}

/// A hint when the error says the URL's scheme is not what the server speaks: https to a
/// plain HTTP server, or plain HTTP to a TLS one.
pub(super) fn scheme_hint(endpoint: &str, chain: &str) -> &'static str {
    let lower = chain.to_ascii_lowercase();
    if endpoint.starts_with("https://")
        && (lower.contains("invalidcontenttype") || lower.contains("corrupt message"))
    {
        "; the server does not speak TLS (it answered in plain HTTP): use http:// in --base-url"
    } else if endpoint.starts_with("http://") && lower.contains("invalid http version") {
        "; the answer is not HTTP (a server speaking TLS answers so): if it serves https, use \
         https:// in --base-url"
    } else {
        ""
    }
}

/// Whether `error`, or an error it wraps, is the client's own open-files limit (`EMFILE`:
/// this process's; `ENFILE`: the whole machine's), not a fault of the server.
pub(crate) fn is_open_files_exhaustion(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if is_exhaustion_code(io.raw_os_error()) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

fn is_exhaustion_code(code: Option<i32>) -> bool {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        code.is_some_and(|c| c == Errno::MFILE.raw_os_error() || c == Errno::NFILE.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = code;
        false
    }
}

#[cfg(test)]
mod exhaustion_tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "connect failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_clients_open_files_limit_is_told_from_a_servers_fault() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_open_files_exhaustion(&Wrapped(emfile)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_open_files_exhaustion(&Wrapped(reset)));
    }
}
