//! The engine thread: owns the model, admits requests, and runs their forward passes.
//!
//! Scheduling policy (documented in docs/CPU.md): each round first admits every request that
//! arrived (in arrival order) and prefills up to `prefill_chunk` prompt tokens of the waiting
//! requests, oldest first (a longer prompt is prefilled in chunks over several rounds; 0 means
//! every waiting prompt whole), streaming a request's first token as soon as its last chunk is
//! run; then gives every running sequence one decode step, in admission order, in batches of up
//! to `max_batch` sequences that share one forward pass (each weight matrix is read once per
//! batch, not once per sequence). So 10 concurrent requests are interleaved fairly, one token
//! each per round, and a long prompt delays the running sequences' next token by one chunk's
//! prefill, not by its whole prefill. `max_batch = 1` is the sequential round-robin: one
//! forward pass per sequence.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::oneshot;

use super::kv_cache::KvCache;
use super::load::{candle_message, LoadedModel};
use super::prefix_cache::PrefixCache;
use super::text::IncrementalText;
use super::CpuConfig;
use crate::backend::sink::TokenSink;
use crate::backend::{ErrorKind, GenerationRequest, KvFigures, RequestError, StreamEvent, Usage};

/// What the backend asks of the engine thread.
pub enum Command {
    Generate {
        request: GenerationRequest,
        events: TokenSink,
    },
    /// Forget kept prefixes (a new workload starts cold); acknowledged when done.
    ClearPrefixCache(oneshot::Sender<()>),
}

/// Counters since the last reset, read by `finish_workload`.
#[derive(Debug, Default, Clone)]
pub struct EngineStats {
    pub kv: KvFigures,
    current_tokens: u64,
    current_bytes: u64,
}

impl EngineStats {
    /// Starts a new measurement window; the peak starts at what is resident now.
    pub fn reset(&mut self) {
        self.kv = KvFigures {
            used_tokens: self.current_tokens,
            used_bytes: self.current_bytes,
            ..KvFigures::default()
        };
    }
}

struct Sequence {
    cache: KvCache,
    events: TokenSink,
    sampler: LogitsProcessor,
    text: IncrementalText,
    prompt_tokens: usize,
    generated: usize,
    max_output: usize,
    last_token: u32,
}

/// An admitted request whose prompt is not wholly in its cache yet.
struct Waiting {
    ids: Vec<u32>,
    cache: KvCache,
    events: TokenSink,
    max_output: usize,
}

pub struct Engine {
    loaded: LoadedModel,
    /// How tokens are chosen, when a sequence stops, what is cached, how many decode at once.
    options: CpuConfig,
    prefixes: PrefixCache,
    stats: Arc<Mutex<EngineStats>>,
    requests_seen: u64,
}

impl Engine {
    pub fn new(loaded: LoadedModel, options: CpuConfig, stats: Arc<Mutex<EngineStats>>) -> Self {
        Engine {
            loaded,
            options,
            prefixes: PrefixCache::default(),
            stats,
            requests_seen: 0,
        }
    }

    /// Serves commands until every sender is gone.
    pub fn run(mut self, commands: std::sync::mpsc::Receiver<Command>) {
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut running: Vec<Sequence> = Vec::new();
        loop {
            let mut arrived = Vec::new();
            if running.is_empty() && waiting.is_empty() {
                match commands.recv() {
                    Ok(c) => arrived.push(c),
                    Err(_) => return,
                }
            }
            arrived.extend(commands.try_iter());
            for command in arrived {
                match command {
                    Command::Generate { request, events } => {
                        waiting.extend(self.admit(request, events));
                    }
                    Command::ClearPrefixCache(done) => {
                        self.prefixes.clear();
                        let _ = done.send(());
                    }
                }
                self.account(&waiting, &running);
            }
            running.extend(self.prefill_round(&mut waiting));
            self.account(&waiting, &running);
            running = self.decode_round(running);
            self.account(&waiting, &running);
        }
    }

    /// Checks a new request and finds the part of its prompt already cached; `None` when it
    /// already finished (refused, or nothing to generate).
    fn admit(&mut self, request: GenerationRequest, mut events: TokenSink) -> Option<Waiting> {
        let fail = |events: TokenSink, message: String| {
            events.fail(ErrorKind::Engine, message);
            None
        };
        // A synthetic prompt is cut to the workload's length in this model's tokens; a turn of
        // a conversation is sent whole, so that it starts with the previous turn's prompt.
        let codec = &self.loaded.codec;
        let ids = match if request.messages.is_empty() {
            codec.prompt_ids(&request.prompt, request.prompt_tokens.max(1))
        } else {
            codec.text_ids(&request.prompt)
        } {
            Ok(ids) => ids,
            Err(e) => return fail(events, e),
        };
        let max_positions = self.loaded.model.max_positions();
        if ids.len() + request.max_output_tokens > max_positions {
            return fail(
                events,
                format!(
                    "{} prompt + {} output tokens exceed the model's {max_positions} positions",
                    ids.len(),
                    request.max_output_tokens
                ),
            );
        }
        if request.max_output_tokens == 0 {
            events.send(StreamEvent::Done {
                usage: Some(Usage {
                    prompt_tokens: ids.len(),
                    completion_tokens: 0,
                }),
            });
            return None;
        }
        // At least the last prompt token is always run: its logits give the first output token.
        let reusable = if self.options.prefix_caching {
            match self.prefixes.lookup(&ids, ids.len() - 1) {
                Ok(found) => found,
                Err(e) => return fail(events, format!("prefix cache: {}", candle_message(&e))),
            }
        } else {
            None
        };
        let cache = reusable.unwrap_or_else(|| KvCache::new(self.loaded.model.num_layers()));
        let hit = cache.len();
        if self.options.prefix_caching {
            events.send(StreamEvent::PrefixCached { tokens: hit });
        }
        if let Ok(mut s) = self.stats.lock() {
            s.kv.prefix_query_tokens += ids.len() as u64;
            s.kv.prefix_hit_tokens += hit as u64;
        }
        Some(Waiting {
            ids,
            cache,
            events,
            max_output: request.max_output_tokens,
        })
    }

    /// Runs up to `prefill_chunk` prompt tokens of the waiting requests, oldest first, and
    /// streams the first token of each whose prompt is now wholly cached; returns those.
    fn prefill_round(&mut self, waiting: &mut VecDeque<Waiting>) -> Vec<Sequence> {
        let mut budget = match self.options.prefill_chunk {
            0 => usize::MAX,
            n => n,
        };
        let mut started = Vec::new();
        while budget > 0 {
            let Some(front) = waiting.front_mut() else {
                break;
            };
            // A client that went away costs no more prefill.
            if front.events.is_abandoned() {
                waiting.pop_front();
                continue;
            }
            let from = front.cache.len();
            let to = front.ids.len().min(from.saturating_add(budget));
            budget -= to - from;
            let logits = match self
                .loaded
                .model
                .forward(&front.ids[from..to], &mut front.cache)
            {
                Ok(l) => l,
                Err(e) => {
                    if let Some(w) = waiting.pop_front() {
                        let message = format!("prefill failed: {}", candle_message(&e));
                        w.events.fail(ErrorKind::Engine, message);
                    }
                    continue;
                }
            };
            if to < front.ids.len() {
                continue; // the budget ended inside this prompt: the next round goes on
            }
            if let Some(done) = waiting.pop_front() {
                started.extend(self.start(done, &logits));
            }
        }
        started
    }

    /// A request whose prompt is wholly cached: keeps the prefix, streams the first token from
    /// the prompt's last logits; `None` when that already finished it.
    fn start(&mut self, done: Waiting, logits: &candle_core::Tensor) -> Option<Sequence> {
        if self.options.prefix_caching {
            self.prefixes.insert(&done.cache);
        }
        self.requests_seen += 1;
        let sampling = match (self.options.temperature, self.options.top_p) {
            (t, _) if t <= 0.0 => Sampling::ArgMax,
            (temperature, Some(p)) => Sampling::TopP { p, temperature },
            (temperature, None) => Sampling::All { temperature },
        };
        let mut seq = Sequence {
            cache: done.cache,
            events: done.events,
            sampler: LogitsProcessor::from_sampling(
                self.options.seed.wrapping_add(self.requests_seen),
                sampling,
            ),
            text: IncrementalText::default(),
            prompt_tokens: done.ids.len(),
            generated: 0,
            max_output: done.max_output,
            last_token: 0,
        };
        self.emit(&mut seq, logits).then_some(seq)
    }

    /// Gives every running sequence one decode step, in order, `max_batch` at a time; returns
    /// the sequences still running, in the same order.
    fn decode_round(&mut self, running: Vec<Sequence>) -> Vec<Sequence> {
        let max_batch = self.options.max_batch.max(1);
        let mut still = Vec::with_capacity(running.len());
        let mut batch = Vec::with_capacity(max_batch);
        // A client that went away frees its sequence before the step instead of costing one.
        for seq in running.into_iter().filter(|s| !s.events.is_abandoned()) {
            batch.push(seq);
            if batch.len() == max_batch {
                still.extend(self.decode_batch(std::mem::take(&mut batch)));
            }
        }
        if !batch.is_empty() {
            still.extend(self.decode_batch(batch));
        }
        still
    }

    /// Runs one decode step for `batch` in one forward pass and streams each sequence's token
    /// (all at the step's end: that is when they exist); returns the sequences not finished.
    fn decode_batch(&mut self, mut batch: Vec<Sequence>) -> Vec<Sequence> {
        let tokens: Vec<u32> = batch.iter().map(|s| s.last_token).collect();
        let mut caches: Vec<&mut KvCache> = batch.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.loaded.model.decode_batch(&tokens, &mut caches);
        let rows = logits.and_then(|l| (0..tokens.len()).map(|i| l.get(i)).collect());
        let rows: Vec<candle_core::Tensor> = match rows {
            Ok(rows) => rows,
            Err(e) => {
                // The caches may hold part of the failed step: no sequence of the batch goes on.
                for seq in &mut batch {
                    seq.events.send(StreamEvent::Error(RequestError::new(
                        ErrorKind::Engine,
                        format!("decode failed: {}", candle_message(&e)),
                    )));
                }
                return Vec::new();
            }
        };
        batch
            .into_iter()
            .zip(rows)
            .filter_map(|(mut seq, row)| self.emit(&mut seq, &row).then_some(seq))
            .collect()
    }

    /// Samples the next token from `logits` and streams it; false when the sequence is done.
    fn emit(&mut self, seq: &mut Sequence, logits: &candle_core::Tensor) -> bool {
        let token = match seq.sampler.sample(logits) {
            Ok(t) => t,
            Err(e) => {
                seq.events.send(StreamEvent::Error(RequestError::new(
                    ErrorKind::Engine,
                    format!("sampling failed: {}", candle_message(&e)),
                )));
                return false;
            }
        };
        seq.generated += 1;
        seq.last_token = token;
        let text = seq.text.push(&self.loaded.codec, token);
        if !seq.events.send(StreamEvent::Tokens { text, tokens: 1 }) {
            return false;
        }
        let at_eos = self.options.stop_at_eos && self.loaded.codec.eos_ids.contains(&token);
        if seq.generated >= seq.max_output || at_eos {
            seq.events.send(StreamEvent::Done {
                usage: Some(Usage {
                    prompt_tokens: seq.prompt_tokens,
                    completion_tokens: seq.generated,
                }),
            });
            return false;
        }
        true
    }

    /// Evicts kept prefixes over the budget and records what is resident.
    fn account(&mut self, waiting: &VecDeque<Waiting>, running: &[Sequence]) {
        let caches = || {
            let waiting = waiting.iter().map(|w| &w.cache);
            waiting.chain(running.iter().map(|s| &s.cache))
        };
        let in_use: usize = caches().map(|c| c.len()).sum();
        let evicted = self
            .prefixes
            .evict_to_fit(in_use, self.options.kv_cache_tokens);
        let tokens = (in_use + self.prefixes.tokens()) as u64;
        let bytes = (caches().map(|c| c.bytes()).sum::<usize>() + self.prefixes.bytes()) as u64;
        if let Ok(mut s) = self.stats.lock() {
            s.kv.evict_count += evicted.entries;
            s.kv.evict_ms += evicted.ms;
            s.current_tokens = tokens;
            s.current_bytes = bytes;
            s.kv.used_tokens = s.kv.used_tokens.max(tokens);
            s.kv.used_bytes = s.kv.used_bytes.max(bytes);
        }
    }
}
