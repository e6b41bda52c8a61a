//! What to run: prompt and output lengths, how many requests, how they arrive, and the prompts.
//!
//! The bottom layer: it imports nothing else of the crate.

pub(crate) mod input;
pub mod load;
pub mod session;
pub mod setup;
pub mod shard;
pub mod slo;
pub mod trace;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::workload::session::Sessions;
use crate::workload::setup::{Prompts, ResponseCheck};
use crate::workload::shard::Shard;
use crate::workload::slo::Slo;
use crate::workload::trace::Trace;

/// Whether `c` may appear in a name that becomes a file or folder name (a workload, a
/// baseline, a compared run): letters, digits, `_`, `-` and `.`. The `#[workload]` macro checks
/// the same rule at compile time in its own crate.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// One benchmark workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The name used in file names and reports, e.g. `short_input`.
    pub name: String,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Output length in tokens; backends are asked to generate exactly this many.
    pub output_tokens: usize,
    /// Requests that are measured.
    pub num_requests: usize,
    /// Requests sent first, one at a time, and not measured.
    pub warmup_requests: usize,
    /// How requests are sent.
    pub arrival: Arrival,
    /// How many leading prompt tokens all requests of this workload share (a system prompt, a
    /// few-shot preamble). 0 gives every request its own prompt.
    pub shared_prefix_tokens: usize,
    /// Seeds the prompts and any random arrival schedule.
    pub seed: u64,
    /// Latency objectives to measure goodput against (`None`: no goodput figures).
    pub goodput: Option<Slo>,
    /// Prompts to send instead of synthetic ones (set in code, see [`crate::Setup`]).
    pub prompts: Option<Prompts>,
    /// A check of each successful response (set in code, see [`crate::Setup`]).
    pub check: Option<ResponseCheck>,
    /// Multi-turn sessions: every measured request is a turn of one (see
    /// [`session`]); `num_requests` is then their total of turns.
    pub sessions: Option<Sessions>,
    /// A trace to replay: its requests, lengths and times replace the synthetic ones, and the
    /// arrival is [`Arrival::Trace`] (see [`trace`]).
    pub trace: Option<Trace>,
    /// The part of the workload this process sends when several send it together (see
    /// [`shard`]); `None` sends it all.
    pub shard: Option<Shard>,
    /// An open loop's cap on requests (sessions, for a multi-turn workload) in flight, as
    /// vLLM's `--max-concurrency`: a request whose time comes while this many are in flight
    /// waits for one to finish, and is sent then. `None`: no cap but the client's own (see
    /// `run::limits`). A closed loop has none (its `concurrency` is its cap).
    pub max_concurrency: Option<usize>,
    /// Percentiles to report beside p50, p95 and p99 (`--percentiles`, vLLM's
    /// `--metric-percentiles`), each above 0 and at most 100.
    pub percentiles: Vec<f64>,
}

/// How requests are sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    /// Closed loop: keep `concurrency` requests in flight; a new one starts when one finishes.
    /// `concurrency = 1` is sequential.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// Open loop: requests start at the times of a Poisson process of `rate` requests per
    /// second, whatever the backend is doing.
    Poisson {
        /// Requests per second, on average.
        rate: f64,
    },
    /// Open loop at a steady pace: request `i` (0-based) starts at `i / rate` seconds, whatever
    /// the backend is doing.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// Replay: each request starts at its time in the workload's trace, whatever the backend
    /// is doing.
    Trace,
    /// Open loop with gamma-distributed gaps of shape `burstiness` and mean `1 / rate`, seeded
    /// (vLLM's `--burstiness`): 1 is a Poisson process, below 1 burstier, above 1 steadier.
    Gamma {
        /// Requests per second, on average.
        rate: f64,
        /// The gaps' shape; their coefficient of variation is `1 / sqrt(burstiness)`.
        burstiness: f64,
    },
    /// Open loop whose rate goes from `start_rate` to `end_rate` over the run (vLLM's
    /// `--ramp-up-strategy`): the gap before request `i` has the mean `1 / r_i`, `r_i` the
    /// rate at `i / (count - 1)` of the way (see [`ramp_schedule`]).
    Ramp {
        /// How the rate goes from start to end.
        strategy: RampStrategy,
        /// The rate of the first gap's request (request 0 starts at 0), requests per second.
        start_rate: f64,
        /// The rate at the last request, requests per second.
        end_rate: f64,
        /// The gaps' shape as in [`Arrival::Gamma`] (1: exponential gaps); `None`: each gap is
        /// exactly `1 / r_i`.
        burstiness: Option<f64>,
    },
}

/// How a ramp's rate goes from its start to its end over the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampStrategy {
    /// `r_i = start + (end - start) * p_i`.
    Linear,
    /// `r_i = start * (end / start) ^ p_i`: the same factor every step.
    Exponential,
}

impl RampStrategy {
    /// Reads `linear` or `exponential`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "linear" => Some(RampStrategy::Linear),
            "exponential" => Some(RampStrategy::Exponential),
            _ => None,
        }
    }

    /// The rate at `progress` (0 at the first request, 1 at the last) from `start` to `end`.
    pub fn rate_at(self, start: f64, end: f64, progress: f64) -> f64 {
        match self {
            RampStrategy::Linear => start + (end - start) * progress,
            RampStrategy::Exponential => start * (end / start).powf(progress),
        }
    }

    fn name(self) -> &'static str {
        match self {
            RampStrategy::Linear => "linear",
            RampStrategy::Exponential => "exponential",
        }
    }
}

impl Arrival {
    /// The number of requests this arrival process may have in flight at once (`None`: no limit).
    pub fn concurrency(&self) -> Option<usize> {
        match self {
            Arrival::Closed { concurrency } => Some(*concurrency),
            Arrival::Poisson { .. }
            | Arrival::Constant { .. }
            | Arrival::Trace
            | Arrival::Gamma { .. }
            | Arrival::Ramp { .. } => None,
        }
    }

    /// The open-loop rate in requests per second (`None` for a closed loop, a trace, and a
    /// ramp, which has no one rate).
    pub fn rate(&self) -> Option<f64> {
        match self {
            Arrival::Closed { .. } | Arrival::Trace | Arrival::Ramp { .. } => None,
            Arrival::Poisson { rate }
            | Arrival::Constant { rate }
            | Arrival::Gamma { rate, .. } => Some(*rate),
        }
    }

    /// When each of `count` measured requests is meant to start, counted from the first, for an
    /// open loop (`None` for a closed loop, whose requests start when others finish, and for a
    /// trace, whose times are its own: see [`Workload::schedule`]).
    pub fn schedule(&self, count: usize, seed: u64) -> Option<Vec<Duration>> {
        match *self {
            Arrival::Closed { .. } | Arrival::Trace => None,
            Arrival::Poisson { rate } => Some(poisson_schedule(rate, count, seed)),
            Arrival::Constant { rate } => Some(constant_schedule(rate, count)),
            Arrival::Gamma { rate, burstiness } => {
                Some(gamma_schedule(rate, burstiness, count, seed))
            }
            Arrival::Ramp {
                strategy,
                start_rate,
                end_rate,
                burstiness,
            } => Some(ramp_schedule(
                strategy, start_rate, end_rate, burstiness, count, seed,
            )),
        }
    }

    /// A short human description, e.g. "5 sequential" or "Poisson 2 req/s".
    pub fn describe(&self) -> String {
        match self {
            Arrival::Closed { concurrency: 1 } => "sequential".to_string(),
            Arrival::Closed { concurrency } => format!("{concurrency} concurrent"),
            Arrival::Poisson { rate } => format!("Poisson {rate} req/s"),
            Arrival::Constant { rate } => format!("constant {rate} req/s"),
            Arrival::Trace => "trace replay".to_string(),
            Arrival::Gamma { rate, burstiness } => {
                format!("gamma {rate} req/s, burstiness {burstiness}")
            }
            Arrival::Ramp {
                strategy,
                start_rate,
                end_rate,
                burstiness,
            } => {
                let gaps = match burstiness {
                    None => "constant gaps".to_string(),
                    Some(b) if *b == 1.0 => "Poisson gaps".to_string(),
                    Some(b) => format!("burstiness {b}"),
                };
                format!(
                    "{} ramp {start_rate} to {end_rate} req/s, {gaps}",
                    strategy.name()
                )
            }
        }
    }
}

/// How an open-loop workload spaces its requests at its `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenLoop {
    /// Exponential gaps, seeded: bursts and lulls, as independent users make.
    #[default]
    Poisson,
    /// Request `i` at `i / rate` seconds.
    Constant,
}

impl OpenLoop {
    /// Reads `poisson` or `constant`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "poisson" => Some(OpenLoop::Poisson),
            "constant" => Some(OpenLoop::Constant),
            _ => None,
        }
    }

    /// The arrival process of this kind at `rate` requests per second.
    pub fn at(self, rate: f64) -> Arrival {
        match self {
            OpenLoop::Poisson => Arrival::Poisson { rate },
            OpenLoop::Constant => Arrival::Constant { rate },
        }
    }
}

/// The longest prompt or output a workload may ask for, in tokens.
pub const MAX_TOKENS: usize = 1 << 20;

/// The most measured (or warm-up) requests one workload may send.
pub const MAX_REQUESTS: usize = 10_000_000;

/// The longest workload name, bytes: its longest file (`compare_<name>_<metric>_cdf.svg`, or
/// a chart's temporary `.<name>_<chart>.svg.<random>.tmp`) must stay within the 255 bytes a
/// file name may hold, with a sweep's `_c<N>` or `_r<RATE>` included.
pub const MAX_NAME_LEN: usize = 160;

/// The slowest open-loop rate, in requests per second (one request in about 11.6 days): below
/// it the schedule's times leave what a `Duration` holds.
pub const MIN_RATE: f64 = 1e-6;

/// The default seed of every preset; any fixed value works, this one is documented.
pub const DEFAULT_SEED: u64 = 42;

impl Workload {
    /// `short_input`: 128 prompt tokens, 128 output tokens, 5 sequential requests.
    pub fn short_input() -> Self {
        Self::preset("short_input", 128, 128, 5, 1)
    }

    /// `long_input`: 200 prompt tokens, 200 output tokens, 3 sequential requests.
    pub fn long_input() -> Self {
        Self::preset("long_input", 200, 200, 3, 1)
    }

    /// `stress_test`: 256 prompt tokens, 256 output tokens, 10 concurrent requests.
    pub fn stress_test() -> Self {
        Self::preset("stress_test", 256, 256, 10, 10)
    }

    /// The three Year-1 workloads, in the order the guide lists them.
    pub fn year1() -> Vec<Self> {
        vec![Self::short_input(), Self::long_input(), Self::stress_test()]
    }

    fn preset(
        name: &str,
        prompt_tokens: usize,
        output_tokens: usize,
        num_requests: usize,
        concurrency: usize,
    ) -> Self {
        Workload {
            name: name.to_string(),
            prompt_tokens,
            output_tokens,
            num_requests,
            warmup_requests: 1,
            arrival: Arrival::Closed { concurrency },
            shared_prefix_tokens: 0,
            seed: DEFAULT_SEED,
            goodput: None,
            prompts: None,
            check: None,
            sessions: None,
            trace: None,
            shard: None,
            max_concurrency: None,
            percentiles: Vec::new(),
        }
    }

    /// A multi-turn workload: `sessions` interleaved sequentially (concurrency 1 until the
    /// arrival is changed), every answer `output_tokens` long. Its `num_requests` is the
    /// sessions' total of turns; `prompt_tokens` is the synthetic user message length, for
    /// descriptions.
    pub fn multi_turn(name: &str, sessions: Sessions, output_tokens: usize) -> Self {
        let mut w = Self::preset(name, sessions.user_tokens.max(1), output_tokens, 1, 1);
        w.num_requests = sessions.total_turns();
        w.sessions = Some(sessions);
        w
    }

    /// A workload that replays `trace`: its requests at its times, with its lengths.
    /// `prompt_tokens` and `output_tokens` hold the trace's first request's lengths (what the
    /// warm-up request asks for).
    pub fn replay(name: &str, trace: Trace) -> Self {
        let mut w = Self::preset(name, 1, 1, trace.len(), 1);
        w.set_trace(trace);
        w
    }

    /// Makes this workload replay `trace`, keeping its name, seed, warm-up and objectives.
    pub fn set_trace(&mut self, trace: Trace) {
        let (_, tokens) = trace.prompt(0, self.seed);
        self.prompt_tokens = tokens.max(1);
        self.output_tokens = trace.requests()[0].output_tokens;
        self.num_requests = trace.len();
        self.arrival = Arrival::Trace;
        self.shared_prefix_tokens = 0;
        self.trace = Some(trace);
    }

    /// Makes this workload multi-turn, keeping its name, arrival, seed, warm-up, answer length
    /// and objectives.
    pub fn set_sessions(&mut self, sessions: Sessions) {
        if sessions.conversations.is_none() {
            self.prompt_tokens = sessions.user_tokens.max(1);
        }
        self.shared_prefix_tokens = 0;
        self.num_requests = sessions.total_turns();
        self.sessions = Some(sessions);
    }

    /// When each measured request (each session, for a multi-turn workload) is meant to start,
    /// counted from the first, for an open loop or a trace; `None` for a closed loop.
    pub fn schedule(&self) -> Option<Vec<Duration>> {
        if let Some(trace) = &self.trace {
            return Some(trace.requests().iter().map(|r| r.at).collect());
        }
        let count = match &self.sessions {
            Some(sessions) => sessions.count,
            None => self.num_requests,
        };
        self.arrival.schedule(count, self.seed)
    }

    /// The measured requests this process sends: all of them, or its shard's part.
    pub fn own_requests(&self) -> usize {
        match (&self.shard, &self.sessions) {
            (None, _) => self.num_requests,
            (Some(shard), Some(sessions)) => (0..sessions.count)
                .filter(|&s| shard.owns(s))
                .map(|s| sessions.turns_of(s))
                .sum(),
            (Some(shard), None) => shard.owned_of(self.num_requests),
        }
    }

    /// The open-loop cap this process keeps (`max_concurrency`): all of it, or its shard's
    /// share, which a merge adds back up.
    pub fn own_max_concurrency(&self) -> Option<usize> {
        self.max_concurrency
            .map(|cap| self.shard.map_or(cap, |s| s.concurrency(cap)))
    }

    /// Whether its requests carry session ids (for `--session-header`): sessions, or a trace
    /// that names them.
    pub fn has_session_ids(&self) -> bool {
        self.sessions.is_some()
            || self
                .trace
                .as_ref()
                .is_some_and(|t| t.requests().iter().any(|r| r.session_id.is_some()))
    }

    /// The output length measured request `index` asks for: the trace's, or the workload's.
    pub fn output_tokens_of(&self, index: usize) -> usize {
        match &self.trace {
            Some(trace) => trace.requests()[index % trace.len()].output_tokens,
            None => self.output_tokens,
        }
    }

    /// A sequential workload with the given shape, the presets' other defaults, and no warm-up
    /// beyond one request.
    pub fn new(
        name: &str,
        prompt_tokens: usize,
        output_tokens: usize,
        num_requests: usize,
    ) -> Self {
        Self::preset(name, prompt_tokens, output_tokens, num_requests, 1)
    }

    /// Checks the fields against each other; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the workload name is empty".into());
        }
        if !self.name.chars().all(is_name_char) || self.name.starts_with('.') {
            return Err(format!(
                "workload name `{}` may only hold letters, digits, `_`, `-` and `.` (it becomes a file name)",
                self.name
            ));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(format!(
                "workload name `{}` is {} bytes long; at most {MAX_NAME_LEN} fit in the file names made of it",
                self.name,
                self.name.len()
            ));
        }
        if self.prompt_tokens == 0 {
            return Err("prompt_tokens must be at least 1".into());
        }
        if self.output_tokens == 0 {
            return Err("output_tokens must be at least 1".into());
        }
        if self.num_requests == 0 {
            return Err("num_requests must be at least 1".into());
        }
        if self.prompt_tokens > MAX_TOKENS || self.output_tokens > MAX_TOKENS {
            return Err(format!(
                "prompt_tokens and output_tokens must be at most {MAX_TOKENS}"
            ));
        }
        // The runner keeps one record (and an open-loop schedule entry) per request in memory
        // before the first one is sent: an absurd count must fail here, not abort an
        // allocation later.
        for (field, count) in [
            ("num_requests", self.num_requests),
            ("warmup_requests", self.warmup_requests),
        ] {
            if count > MAX_REQUESTS {
                return Err(format!(
                    "{field} ({count}) must be at most {MAX_REQUESTS}; split a longer run into several workloads"
                ));
            }
        }
        if self.prompts.as_ref().is_some_and(Prompts::is_empty) {
            return Err("the workload's prompt list is empty; give at least one prompt".into());
        }
        if self.shared_prefix_tokens > self.prompt_tokens {
            return Err(format!(
                "shared_prefix_tokens ({}) is longer than prompt_tokens ({})",
                self.shared_prefix_tokens, self.prompt_tokens
            ));
        }
        self.validate_sources()?;
        self.validate_shard()?;
        self.validate_cap()?;
        if let Some(p) = self
            .percentiles
            .iter()
            .find(|p| !(**p > 0.0 && **p <= 100.0))
        {
            return Err(format!(
                "percentiles must be above 0 and at most 100, not {p}"
            ));
        }
        let rate_ok = |field: &str, rate: f64| {
            if rate.is_finite() && rate >= MIN_RATE {
                Ok(())
            } else {
                Err(format!(
                    "{field} must be a number of requests per second of at least {MIN_RATE}, not {rate}"
                ))
            }
        };
        let burstiness_ok = |b: f64| {
            if b.is_finite() && b > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "burstiness must be a number above 0 (1 is Poisson, below 1 burstier, above 1 steadier), not {b}"
                ))
            }
        };
        match self.arrival {
            Arrival::Closed { concurrency: 0 } => Err("concurrency must be at least 1".into()),
            Arrival::Closed { .. } | Arrival::Trace => Ok(()),
            Arrival::Poisson { rate } | Arrival::Constant { rate } => rate_ok("rate", rate),
            Arrival::Gamma { rate, burstiness } => {
                rate_ok("rate", rate)?;
                burstiness_ok(burstiness)
            }
            Arrival::Ramp {
                start_rate,
                end_rate,
                burstiness,
                ..
            } => {
                rate_ok("the ramp's start rate (--ramp-up-start-rps)", start_rate)?;
                rate_ok("the ramp's end rate (--ramp-up-end-rps)", end_rate)?;
                burstiness.map_or(Ok(()), burstiness_ok)
            }
        }
    }

    /// A cap on requests in flight belongs to an open loop and lets at least one through.
    fn validate_cap(&self) -> Result<(), String> {
        match (self.max_concurrency, self.arrival) {
            (None, _) => Ok(()),
            (Some(0), _) => Err("max_concurrency must be at least 1".into()),
            (Some(_), Arrival::Closed { .. }) => Err(
                "max_concurrency caps an open loop (a rate, a ramp or a trace); a closed loop's cap is its concurrency: set that instead".into(),
            ),
            (Some(cap), _) => match self.shard {
                Some(shard) if cap < shard.count => Err(format!(
                    "max_concurrency {cap} cannot be divided among {} shards (each needs at least one request in flight); give --max-concurrency of at least {}",
                    shard.count, shard.count
                )),
                _ => Ok(()),
            },
        }
    }

    /// A shard must own something to send, and a closed loop at least one request in flight.
    fn validate_shard(&self) -> Result<(), String> {
        let Some(shard) = self.shard else {
            return Ok(());
        };
        let (items, what) = match &self.sessions {
            Some(sessions) => (sessions.count, "sessions"),
            None => (self.num_requests, "requests"),
        };
        if items < shard.count {
            return Err(format!(
                "{items} {what} cannot be split among {} shards: each shard needs at least one; give at least {} {what}",
                shard.count, shard.count
            ));
        }
        if let Arrival::Closed { concurrency } = self.arrival {
            if concurrency < shard.count {
                return Err(format!(
                    "concurrency {concurrency} cannot be divided among {} shards (each needs at least one {} in flight); give --concurrency of at least {}",
                    shard.count,
                    if self.sessions.is_some() { "session" } else { "request" },
                    shard.count
                ));
            }
        }
        Ok(())
    }

    /// The rules between sessions, a trace, prompts and the arrival.
    fn validate_sources(&self) -> Result<(), String> {
        if let Some(sessions) = &self.sessions {
            sessions.validate()?;
            if self.trace.is_some() {
                return Err("a workload replays a trace or runs sessions, not both".into());
            }
            if self.prompts.is_some() {
                return Err(
                    "a multi-turn workload takes its user messages from its sessions (synthetic, or conversations from a file), not from a prompt list"
                        .into(),
                );
            }
            let turns = sessions.total_turns();
            if self.num_requests != turns {
                return Err(format!(
                    "a multi-turn workload's num_requests is its sessions' turns ({turns}), not {}; set the number of sessions (--sessions) and turns (--turns) instead",
                    self.num_requests
                ));
            }
        }
        match (&self.trace, self.arrival) {
            (Some(trace), Arrival::Trace) => {
                if self.num_requests != trace.len() {
                    return Err(format!(
                        "a trace replay's num_requests is the trace's requests ({}), not {}; take a part of the trace with --trace-window",
                        trace.len(),
                        self.num_requests
                    ));
                }
                if self.prompts.is_some() {
                    return Err("a trace replay takes its prompts from the trace, not from a prompt list".into());
                }
                Ok(())
            }
            (Some(_), _) => Err(
                "a workload with a trace replays it at the trace's times: its arrival must be `trace`, not a concurrency or a rate"
                    .into(),
            ),
            (None, Arrival::Trace) => {
                Err("the arrival is `trace` but the workload has no trace to replay".into())
            }
            (None, _) => Ok(()),
        }
    }

    /// The prompt of measured request `index` (0-based), or of warm-up request `index` when
    /// `warmup` is true. Deterministic in (seed, index, warmup).
    pub fn prompt(&self, index: usize, warmup: bool) -> Prompt {
        if let (Some(trace), false) = (&self.trace, warmup) {
            let (text, tokens) = trace.prompt(index, self.seed);
            return Prompt { text, tokens };
        }
        if let Some(prompts) = &self.prompts {
            let text = prompts.get(index).to_string();
            // Without the backend's tokenizer, a word is the best count available; backends
            // that report usage replace it in the records.
            let tokens = text.split_whitespace().count();
            return Prompt { text, tokens };
        }
        let mut words = Vec::with_capacity(self.prompt_tokens);
        let mut shared = ChaCha8Rng::seed_from_u64(self.seed);
        for _ in 0..self.shared_prefix_tokens {
            words.push(VOCABULARY[shared.gen_range(0..VOCABULARY.len())]);
        }
        // A stream per request; warm-up requests draw from a disjoint family of streams.
        let stream = if warmup {
            (1 << 32) | index as u64
        } else {
            index as u64
        };
        let mut own = ChaCha8Rng::seed_from_u64(self.seed);
        own.set_stream(stream + 1);
        while words.len() < self.prompt_tokens {
            words.push(VOCABULARY[own.gen_range(0..VOCABULARY.len())]);
        }
        Prompt {
            text: words.join(" "),
            tokens: self.prompt_tokens,
        }
    }
}

/// A prompt and the number of tokens it was built to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The prompt text.
    pub text: String,
    /// Its length in tokens, as built.
    pub tokens: usize,
}

/// Synthetic prompts are made of these words, one token each for the mock's word tokenizer.
/// Backends with a real tokenizer re-cut prompts to the exact token count.
pub(crate) const VOCABULARY: &[&str] = &[
    "the",
    "model",
    "server",
    "token",
    "cache",
    "batch",
    "latency",
    "request",
    "stream",
    "memory",
    "prefix",
    "decode",
    "prefill",
    "engine",
    "queue",
    "block",
    "layer",
    "weight",
    "tensor",
    "attention",
    "sequence",
    "output",
    "input",
    "prompt",
    "bench",
    "mark",
    "time",
    "first",
    "between",
    "through",
    "put",
    "kernel",
    "page",
    "evict",
    "hit",
    "rate",
    "score",
    "value",
    "key",
    "head",
    "norm",
    "scale",
    "shape",
    "graph",
    "node",
    "edge",
    "path",
    "route",
];

/// The start times of `count` requests of a Poisson process with `rate` requests per second,
/// counted from the first (which starts at zero), seeded so the schedule repeats exactly.
pub fn poisson_schedule(rate: f64, count: usize, seed: u64) -> Vec<Duration> {
    gap_schedule(count, seed, |_| rate, Some(1.0))
}

/// The start times of `count` requests whose gaps are gamma-distributed with shape
/// `burstiness` and mean `1 / rate`, counted from the first (at zero), seeded. A burstiness of
/// 1 gives exactly [`poisson_schedule`]'s times.
pub fn gamma_schedule(rate: f64, burstiness: f64, count: usize, seed: u64) -> Vec<Duration> {
    gap_schedule(count, seed, |_| rate, Some(burstiness))
}

/// The start times of `count` requests of a ramp from `start_rate` to `end_rate`: request 0
/// at zero, request `i` one gap after request `i - 1`, the gap drawn with the mean `1 / r_i`
/// where `r_i = strategy.rate_at(start_rate, end_rate, i / (count - 1))` (the rate vLLM gives
/// request `i`). The gaps are gamma with shape `burstiness` (seeded as [`gamma_schedule`]), or
/// exactly `1 / r_i` when `burstiness` is `None`.
pub fn ramp_schedule(
    strategy: RampStrategy,
    start_rate: f64,
    end_rate: f64,
    burstiness: Option<f64>,
    count: usize,
    seed: u64,
) -> Vec<Duration> {
    let last = count.saturating_sub(1).max(1) as f64;
    let rate_of = |i: usize| strategy.rate_at(start_rate, end_rate, i as f64 / last);
    gap_schedule(count, seed, rate_of, burstiness)
}

/// Request 0 at zero, then request `i` one gap after request `i - 1`, the gap of mean
/// `1 / rate_of(i)`: exactly that (`shape` `None`), or gamma-distributed with that shape.
fn gap_schedule(
    count: usize,
    seed: u64,
    rate_of: impl Fn(usize) -> f64,
    shape: Option<f64>,
) -> Vec<Duration> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A separate stream from the prompts' streams, so changing one does not move the other.
    rng.set_stream(u64::MAX);
    let mut t = 0.0f64;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 {
            let rate = rate_of(i);
            t += match shape {
                None => 1.0 / rate,
                // A gamma variable of shape k has the mean k: over k * rate, the mean 1 / rate.
                // (Divided, not multiplied by 1 / rate: shape 1 keeps the Poisson schedule's
                // exact times, `-ln(1 - u) / rate`.)
                Some(k) => gamma(&mut rng, k) / (k * rate),
            };
        }
        // `validate` bounds the rates and the count so `t` stays far inside a Duration;
        // saturate rather than panic should a caller skip it.
        times.push(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX));
    }
    times
}

/// A gamma-distributed number of shape `k` and scale 1 (mean `k`, variance `k`).
///
/// `rand_distr` is in Cargo.lock, but in the version for rand 0.9, whose generators are not
/// this crate's rand 0.8 ones; the sampler is short enough to keep here. Shape 1 is the
/// exponential distribution, drawn by inverse CDF from one uniform number (so a burstiness of
/// 1 repeats the Poisson schedule exactly). Other shapes: Marsaglia and Tsang, "A simple
/// method for generating gamma variables" (ACM TOMS 26(3), 2000): for `k >= 1`, with
/// `d = k - 1/3` and `c = 1 / sqrt(9d)`, draw a standard normal `x` and `v = (1 + cx)^3`, and
/// accept `dv` when `v > 0` and `ln u < x^2/2 + d - dv + d ln v` (`u` uniform); for `k < 1`,
/// `G(k) = G(k + 1) * u^(1/k)`.
pub(crate) fn gamma<R: Rng + ?Sized>(rng: &mut R, k: f64) -> f64 {
    // 1 - u lies in (0, 1], so its logarithm is finite.
    fn unit_open<R: Rng + ?Sized>(rng: &mut R) -> f64 {
        1.0 - rng.gen::<f64>()
    }
    if k == 1.0 {
        return -unit_open(rng).ln();
    }
    if k < 1.0 {
        let boost = unit_open(rng).powf(1.0 / k);
        return gamma(rng, k + 1.0) * boost;
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // A standard normal number by Box and Muller's transform of two uniform numbers.
        let (u1, u2) = (unit_open(rng), rng.gen::<f64>());
        let x = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = unit_open(rng);
        // The squeeze first (cheap, accepts most), then the exact test.
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// The start times of `count` requests sent at a steady `rate` requests per second: request `i`
/// at `i / rate` seconds after the first.
pub fn constant_schedule(rate: f64, count: usize) -> Vec<Duration> {
    (0..count)
        // Saturate rather than panic should a caller skip `validate`, as `poisson_schedule` does.
        .map(|i| Duration::try_from_secs_f64(i as f64 / rate).unwrap_or(Duration::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_usage_guide() {
        let [short, long, stress] = <[Workload; 3]>::try_from(Workload::year1()).unwrap();
        assert_eq!(
            (
                short.name.as_str(),
                short.prompt_tokens,
                short.output_tokens,
                short.num_requests
            ),
            ("short_input", 128, 128, 5)
        );
        assert_eq!(short.arrival, Arrival::Closed { concurrency: 1 });
        assert_eq!(
            (
                long.name.as_str(),
                long.prompt_tokens,
                long.output_tokens,
                long.num_requests
            ),
            ("long_input", 200, 200, 3)
        );
        assert_eq!(long.arrival, Arrival::Closed { concurrency: 1 });
        assert_eq!(
            (
                stress.name.as_str(),
                stress.prompt_tokens,
                stress.output_tokens,
                stress.num_requests
            ),
            ("stress_test", 256, 256, 10)
        );
        assert_eq!(stress.arrival, Arrival::Closed { concurrency: 10 });
    }

    #[test]
    fn prompts_have_the_exact_word_count_and_are_deterministic() {
        let w = Workload::short_input();
        let p = w.prompt(3, false);
        assert_eq!(p.text.split_whitespace().count(), 128);
        assert_eq!(p, w.prompt(3, false));
        assert_ne!(p, w.prompt(4, false));
        assert_ne!(p, w.prompt(3, true));
    }

    #[test]
    fn shared_prefix_is_shared_and_the_rest_differs() {
        let mut w = Workload::stress_test();
        w.shared_prefix_tokens = 100;
        let a: Vec<String> = w
            .prompt(0, false)
            .text
            .split(' ')
            .map(String::from)
            .collect();
        let b: Vec<String> = w
            .prompt(1, false)
            .text
            .split(' ')
            .map(String::from)
            .collect();
        assert_eq!(a[..100], b[..100]);
        assert_ne!(a[100..], b[100..]);
    }

    #[test]
    fn poisson_schedule_has_the_requested_mean_rate() {
        let rate = 4.0;
        let n = 20_000;
        let times = poisson_schedule(rate, n, 7);
        assert_eq!(times[0], Duration::ZERO);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let measured = (n - 1) as f64 / times[n - 1].as_secs_f64();
        // The mean of 19,999 exponential gaps has a relative standard error of 1/sqrt(19,999),
        // about 0.7%; 3% is over four standard errors.
        assert!((measured - rate).abs() / rate < 0.03, "measured {measured}");
        // Exponential gaps: the standard deviation equals the mean.
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((var.sqrt() / mean - 1.0).abs() < 0.05);
        assert_eq!(times, poisson_schedule(rate, n, 7));
        assert_ne!(times, poisson_schedule(rate, n, 8));
    }

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        // 4 req/s: 0, 250, 500, 750 ms; 2.5 req/s: a request every 400 ms.
        let ms = |times: Vec<Duration>| times.iter().map(|t| t.as_millis()).collect::<Vec<_>>();
        assert_eq!(ms(constant_schedule(4.0, 4)), vec![0, 250, 500, 750]);
        assert_eq!(ms(constant_schedule(2.5, 3)), vec![0, 400, 800]);
        assert_eq!(
            Arrival::Constant { rate: 4.0 }.schedule(2, 9),
            Some(vec![Duration::ZERO, Duration::from_millis(250)])
        );
        assert_eq!(Arrival::Closed { concurrency: 2 }.schedule(2, 9), None);
        assert_ne!(
            Arrival::Constant { rate: 4.0 }.schedule(10, 9),
            Arrival::Poisson { rate: 4.0 }.schedule(10, 9)
        );
    }

    #[test]
    fn gamma_sampler_has_the_closed_form_mean_and_variance() {
        // Gamma(k, 1): mean k, variance k. Over n draws the sample mean has the standard
        // error sqrt(k / n); the sample variance has sqrt((m4 - k^2) / n), where the fourth
        // central moment is m4 = 3k^2 + 6k (excess kurtosis 6 / k). Both are allowed five
        // standard errors: a seeded draw, so the test is exact, and a broken sampler (a wrong
        // shape, a missing boost below 1) misses by far more.
        let n = 200_000;
        for k in [0.25, 0.5, 1.0, 2.0, 7.5] {
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let draws: Vec<f64> = (0..n).map(|_| gamma(&mut rng, k)).collect();
            assert!(draws.iter().all(|x| x.is_finite() && *x >= 0.0));
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let mean_se = (k / n as f64).sqrt();
            let var_se = ((3.0 * k * k + 6.0 * k - k * k) / n as f64).sqrt();
            assert!((mean - k).abs() < 5.0 * mean_se, "k {k}: mean {mean}");
            assert!((var - k).abs() < 5.0 * var_se, "k {k}: variance {var}");
        }
    }

    #[test]
    fn burstiness_one_is_the_poisson_schedule_and_others_change_the_spread() {
        assert_eq!(
            gamma_schedule(3.0, 1.0, 500, 5),
            poisson_schedule(3.0, 500, 5)
        );
        assert_eq!(
            Arrival::Gamma {
                rate: 3.0,
                burstiness: 1.0
            }
            .schedule(50, 5),
            Arrival::Poisson { rate: 3.0 }.schedule(50, 5)
        );
        // Gaps of shape B and mean 1/rate have the coefficient of variation 1/sqrt(B): 2 at
        // B = 0.25, 0.5 at B = 4. With 20,000 gaps the sample CV is within a few percent
        // (its standard error is below 2% of it for these shapes); 10% is far outside both
        // the other shape's CV and Poisson's 1.
        let rate = 5.0;
        for (b, cv) in [(0.25, 2.0), (4.0, 0.5)] {
            let times = gamma_schedule(rate, b, 20_001, 3);
            assert_eq!(times[0], Duration::ZERO);
            let gaps: Vec<f64> = times
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64())
                .collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>()
                / (gaps.len() - 1) as f64)
                .sqrt();
            assert!((mean * rate - 1.0).abs() < 0.05, "B {b}: mean gap {mean}");
            assert!(
                (sd / mean - cv).abs() / cv < 0.10,
                "B {b}: CV {}",
                sd / mean
            );
        }
    }

    #[test]
    fn ramp_schedules_by_hand() {
        let ms = |times: Vec<Duration>| {
            times
                .iter()
                .map(|t| (t.as_secs_f64() * 1e6).round() / 1e3)
                .collect::<Vec<_>>()
        };
        // Linear 1 -> 4 req/s over 4 requests: rates 1, 2, 3, 4; the gap before request i is
        // 1 / r_i: 0, then +500 ms, +333.333 ms, +250 ms.
        assert_eq!(
            ms(ramp_schedule(RampStrategy::Linear, 1.0, 4.0, None, 4, 0)),
            vec![0.0, 500.0, 833.333, 1083.333]
        );
        // Exponential 1 -> 8 req/s over 4 requests: rates 1, 2, 4, 8 (doubling): 0, 500, 750,
        // 875 ms.
        assert_eq!(
            ms(ramp_schedule(
                RampStrategy::Exponential,
                1.0,
                8.0,
                None,
                4,
                0
            )),
            vec![0.0, 500.0, 750.0, 875.0]
        );
        // Down-ramps too: linear 10 -> 5 over 3 requests: rates 10, 7.5, 5: 0, 133.333, 333.333.
        assert_eq!(
            ms(ramp_schedule(RampStrategy::Linear, 10.0, 5.0, None, 3, 0)),
            vec![0.0, 133.333, 333.333]
        );
        // One request: at zero, whatever the ramp.
        assert_eq!(
            ramp_schedule(RampStrategy::Linear, 1.0, 4.0, Some(1.0), 1, 0),
            vec![Duration::ZERO]
        );
        // With gamma gaps, a flat ramp is the gamma schedule at its rate.
        assert_eq!(
            ramp_schedule(RampStrategy::Linear, 2.0, 2.0, Some(0.5), 100, 9),
            gamma_schedule(2.0, 0.5, 100, 9)
        );
    }

    #[test]
    fn a_cap_is_for_open_loops_and_at_least_one() {
        let mut w = Workload::short_input();
        w.max_concurrency = Some(2);
        assert!(w.validate().unwrap_err().contains("closed loop"));
        w.arrival = Arrival::Poisson { rate: 2.0 };
        assert_eq!(w.validate(), Ok(()));
        w.max_concurrency = Some(0);
        assert!(w.validate().unwrap_err().contains("max_concurrency"));
        w.max_concurrency = None;
        w.arrival = Arrival::Gamma {
            rate: 2.0,
            burstiness: 0.0,
        };
        assert!(w.validate().unwrap_err().contains("burstiness"));
        w.arrival = Arrival::Ramp {
            strategy: RampStrategy::Exponential,
            start_rate: 0.0,
            end_rate: 4.0,
            burstiness: None,
        };
        assert!(w.validate().unwrap_err().contains("--ramp-up-start-rps"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut w = Workload::short_input();
        w.num_requests = 0;
        assert!(w.validate().unwrap_err().contains("num_requests"));
        let mut w = Workload::short_input();
        w.arrival = Arrival::Poisson { rate: -1.0 };
        assert!(w.validate().unwrap_err().contains("rate"));
        w.arrival = Arrival::Constant { rate: 0.0 };
        assert!(w.validate().unwrap_err().contains("rate"));
        let mut w = Workload::short_input();
        w.name = "../escape".into();
        assert!(w.validate().is_err());
    }
}
