//! How tokens are produced: one streaming trait, one implementation per engine.
//!
//! A backend turns a [`GenerationRequest`] into a stream of [`StreamEvent`]s. The runner stamps
//! each event with the clock the backend runs on ([`Backend::clock`]), so TTFT and the gaps
//! between tokens are measured where the tokens arrive, never reported by the backend itself.

pub mod clock;
#[cfg(feature = "cpu")]
pub mod cpu;
pub mod guard;
pub mod mock;
#[cfg(feature = "openai")]
pub mod openai;
pub mod registered;
pub(crate) mod secrets;
pub mod sink;
pub mod spec;

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::backend::clock::Clock;
pub use crate::workload::session::{Message, Role};
use crate::workload::Workload;

/// One request as the backend receives it.
#[derive(Debug, Clone, Default)]
pub struct GenerationRequest {
    /// The prompt text. For a turn of a multi-turn session: the whole conversation so far,
    /// rendered as one text (what a completions endpoint or an in-process engine takes).
    pub prompt: String,
    /// The prompt's length in tokens, as the workload built it.
    pub prompt_tokens: usize,
    /// How many tokens to generate. Backends generate exactly this many unless they fail.
    pub max_output_tokens: usize,
    /// For a turn of a multi-turn session: the conversation so far as messages, ending with
    /// the user's new message (what a chat endpoint takes). Empty for a single-turn request.
    pub messages: Vec<Message>,
    /// The session the request belongs to (a multi-turn session, or a trace's `session_id`),
    /// for backends that route by it (an `X-Session-ID` header).
    pub session_id: Option<String>,
}

/// What a backend's stream yields. A stream ends with exactly one `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Output content: `tokens` tokens of `text`. An event with `tokens == 0` (a role-only or
    /// empty chunk) is not output and does not count towards TTFT.
    Tokens {
        /// The text of the chunk.
        text: String,
        /// How many tokens it holds.
        tokens: usize,
    },
    /// Reasoning content (a reasoning model's thinking, sent before its answer): `tokens` tokens
    /// of `text`. Counted towards TTFT, the inter-token gaps and `n` like [`StreamEvent::Tokens`],
    /// and apart from them in the reasoning figures: the time to first output token (TTFO) is
    /// the first `Tokens` event's, not this one's. `tokens == 0` is not output.
    Reasoning {
        /// The text of the chunk.
        text: String,
        /// How many tokens it holds.
        tokens: usize,
    },
    /// The request finished successfully.
    Done {
        /// Token counts as the backend reports them, where it does.
        usage: Option<Usage>,
    },
    /// The request failed; tokens already streamed stay in its record.
    Error(RequestError),
    /// `tokens` of the prompt were served from the engine's prefix cache instead of being
    /// computed; sent before `Done` by backends that know it (the first report counts: a
    /// preempted request looks its prefix up again).
    PrefixCached {
        /// Prompt tokens found in the cache.
        tokens: usize,
    },
    /// `event`, stamped by the backend at `at` (its clock's [`Clock::now`]) instead of when the
    /// runner receives it: what [`TokenSink`](sink::TokenSink) sends, so that an engine on its
    /// own thread is timed when it produced each token, not when the runner got round to
    /// reading it. The runner keeps the stamp within the request's send time and the time it
    /// receives the event.
    Stamped {
        /// The backend clock's reading when the event was produced.
        at: std::time::Duration,
        /// The event itself (not itself stamped).
        event: Box<StreamEvent>,
    },
}

/// Token counts as reported by the backend (a server's `usage` block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestError {
    /// What kind of failure, for counting.
    pub kind: ErrorKind,
    /// What happened, for the per-request record.
    pub message: String,
}

impl RequestError {
    /// A failure of this kind with this message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RequestError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

/// The kinds of request failure, for counting and for the per-request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The engine refused or aborted the request (e.g. it can never fit in the KV cache).
    Engine,
    /// The request could not be sent or the connection broke.
    Connection,
    /// The server answered with an error status.
    Http,
    /// The stream did not follow the protocol (malformed chunk, ended without finishing).
    Protocol,
    /// No progress within the time limit.
    Timeout,
    /// The response failed the workload's own check.
    Check,
    /// The client's own limits stopped the request before the server had a part in it (the
    /// process ran out of file handles for a connection): not a fault of the server.
    Client,
    /// Never sent: an earlier turn of its multi-turn session failed, so the conversation it
    /// would continue does not exist. Counted, never silently dropped.
    NotSent,
}

/// Where a group of figures came from, so a reader never mistakes "unknown" for "zero".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureSource {
    /// Measured in this process (clock stamps, resident memory sampling).
    Measured,
    /// Computed by the mock's simulated engine.
    Simulated,
    /// Scraped from the server's metrics endpoint.
    Scraped,
    /// The backend does not expose it; the figures are written as 0.
    Unavailable,
}

/// Engine-side figures over one workload, as the backend knows them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineFigures {
    /// KV-cache figures, where the engine has them.
    pub kv: Option<KvFigures>,
    /// Memory of the process holding the model, where known.
    pub memory: Option<MemoryFigures>,
    /// Speculative decoding figures, where the engine speculates.
    pub spec: Option<SpecFigures>,
    /// Where the figures above came from (ignored for the ones that are `None`).
    pub source: Option<FigureSource>,
    /// The client's connections to a server, where the backend talks to one; always measured
    /// by the client itself.
    pub connections: Option<ConnectionFigures>,
    /// The server's own timings of the workload's requests, where its metrics give them;
    /// always scraped.
    pub server_timings: Option<ServerTimings>,
    /// Tokens each speculative decoding step yields on average (accepted drafts plus the one
    /// the target model adds), where the backend counts it.
    pub spec_mean_acceptance_length: Option<f64>,
}

/// The server's own time spent per phase of the workload's requests, from its metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerTimings {
    /// Waiting in the server's queue before being scheduled.
    pub queue: Option<ServerTiming>,
    /// From the server receiving the request to its first token.
    pub ttft: Option<ServerTiming>,
    /// Computing the prompt.
    pub prefill: Option<ServerTiming>,
    /// Generating after the first token.
    pub decode: Option<ServerTiming>,
}

/// One phase's time over the workload, as the server counted it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerTiming {
    /// Total milliseconds over the workload's requests.
    pub total_ms: f64,
    /// The requests the server counted them over; `None` when its metric has no count
    /// (llama.cpp's seconds counters), so the mean is over the workload's own requests.
    pub requests: Option<u64>,
    /// The metric it was read from.
    pub metric: String,
}

/// How the client's connections to a server behaved over one workload's measured requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionFigures {
    /// TCP connections opened while the measured requests ran (connections opened beforehand to
    /// warm the pool are not counted). Each one's handshake lands inside a request's TTFT.
    pub opened: u64,
    /// Requests sent a second time, on a fresh connection, because the reused connection they
    /// first went out on was closed by the server before any byte of the answer arrived.
    pub retried_requests: u64,
}

/// KV-cache figures over one workload.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KvFigures {
    /// Peak tokens resident in the KV cache.
    pub used_tokens: u64,
    /// Peak bytes resident in the KV cache.
    pub used_bytes: u64,
    /// Prompt tokens served from a cached prefix.
    pub prefix_hit_tokens: u64,
    /// Prompt tokens looked up in the prefix cache.
    pub prefix_query_tokens: u64,
    /// KV blocks evicted or preempted.
    pub evict_count: u64,
    /// Time spent evicting, in milliseconds.
    pub evict_ms: f64,
}

/// Memory of the process that holds the model, over one workload.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MemoryFigures {
    /// Peak resident memory, in MiB.
    pub peak_mb: f64,
    /// Mean resident memory over the workload, in MiB.
    pub avg_mb: f64,
}

/// Speculative decoding figures over one workload.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpecFigures {
    /// Tokens the draft proposed.
    pub draft_tokens: u64,
    /// Draft tokens the target model accepted.
    pub accepted_tokens: u64,
}

/// A setup failure that stops the run (as opposed to one failed request).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    /// The backend could not be set up (a model that does not load, a server that cannot be
    /// reached, settings out of range); the message says which.
    Setup(String),
}

/// An inference engine the runner can drive.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The backend's name as the CLI spells it, e.g. `mock`.
    fn name(&self) -> &str;

    /// The model being served, as recorded in the results.
    fn model(&self) -> &str;

    /// The clock to stamp events with. Real backends keep the default.
    fn clock(&self) -> Clock {
        Clock::real()
    }

    /// True when the model runs inside this process, so the runner samples this process's
    /// resident memory for `peak_mem_mb` and `avg_mem_mb` (unless the backend reports its own).
    fn model_in_process(&self) -> bool {
        false
    }

    /// The backend's settings, recorded in the run's provenance.
    fn settings(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Called before each workload (warm-up included). Engines that keep per-workload state
    /// reset it here.
    async fn start_workload(&self, _workload: &Workload) -> Result<(), BackendError> {
        Ok(())
    }

    /// Starts one request. The stream must end with `Done` or `Error`, and then end (yield
    /// `None`) when polled again: the runner polls it once more after the final event is
    /// stamped, before the same worker sends its next request, so that work belonging to the
    /// request but not to its latency can finish there (the openai backend reads the rest of
    /// the HTTP body, so its connection is reused).
    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent>;

    /// Called after the measured requests of a workload; returns the engine-side figures for the
    /// measured part (warm-up excluded where the engine can tell).
    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        Ok(EngineFigures::default())
    }

    /// Called between warm-up and the measured requests, so engine statistics cover only the
    /// latter. Engine state (such as a warm prefix cache) is kept.
    async fn reset_statistics(&self) {}

    /// A tokenizer to count the output of requests that finish without a usage report (see
    /// `--tokenizer`); `None` (the default) counts the stream's events instead.
    fn output_token_counter(&self) -> Option<std::sync::Arc<dyn CountTokens>> {
        None
    }
}

/// Counts the tokens of a request's streamed text, for backends whose stream does not say.
pub trait CountTokens: Send + Sync {
    /// The number of tokens `text` encodes to; `None` when it cannot be counted.
    fn count(&self, text: &str) -> Option<usize>;

    /// Who counts: a tokenizer in this process (the default) or the server's own tokenizer,
    /// asked over the network. Recorded as each request's `output_tokens_source`.
    fn counter(&self) -> Counter {
        Counter::Local
    }
}

/// Who a [`CountTokens`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A tokenizer loaded in this process (`--tokenizer`).
    Local,
    /// The server's tokenizer, through its `/tokenize` endpoint.
    Server,
}
