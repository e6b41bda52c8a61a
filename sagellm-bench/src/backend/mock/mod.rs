//! The `mock` backend: a simulated inference engine on a virtual clock.
//!
//! No model and no hardware, yet not a stub: requests go through a small model of a serving
//! engine, and the runner measures it exactly as it measures a real one. Each engine *step*
//!
//! 1. schedules work under a token budget (continuous batching with chunked prefill): running
//!    sequences first (one decode token each, or the next prefill chunk), then waiting requests
//!    in arrival order while budget, sequence slots and KV blocks last;
//! 2. takes `step_base_us + decode_us_per_seq × decoding sequences + prefill_us_per_token ×
//!    prefilled tokens + evict_us_per_block × evicted blocks` of virtual time;
//! 3. emits one token to every sequence whose prompt is fully processed (more with speculation).
//!
//! The KV cache is paged: `kv_blocks` blocks of `block_size` tokens. Full prompt blocks are
//! hashed (chained over the prefix), so a request whose prompt starts like an earlier one reuses
//! those blocks instead of prefilling them (`prefix_hit_rate`). Freed blocks stay cached until
//! reused, least recently freed first; reusing a cached block is an eviction. When a running
//! sequence needs a block and none is free, the most recently admitted sequence is preempted: its
//! blocks are freed (counted as evictions) and it goes back to the front of the queue, to be
//! recomputed. A request that could never fit fails with an engine error.
//!
//! Every number is a function of the configuration and the requests, so two runs of the same
//! command agree to the last digit. The memory figures are the simulated engine's (weights plus
//! KV blocks in use), recorded as `simulated`.

use std::sync::{Arc, Mutex};

mod engine;
mod kv_cache;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::engine::{Engine, Stats};
use super::{
    Backend, BackendError, EngineFigures, ErrorKind, FigureSource, GenerationRequest, KvFigures,
    MemoryFigures, RequestError, SpecFigures, StreamEvent,
};
use crate::backend::clock::Clock;
use crate::workload::Workload;

/// The simulated engine's parameters. Defaults describe a 1.1B-parameter Llama-class model in
/// fp16 on one accelerator; every field can be set in the `[mock]` table of a workload config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the cache; the capacity is `kv_blocks × block_size` tokens.
    pub kv_blocks: usize,
    /// KV bytes per token (K and V, all layers).
    pub kv_bytes_per_token: u64,
    /// Bytes of model weights, counted in the simulated memory.
    pub weights_bytes: u64,
    /// Fixed time of one engine step, in microseconds.
    pub step_base_us: f64,
    /// Added per decoding sequence in a step, in microseconds.
    pub decode_us_per_seq: f64,
    /// Added per prompt token processed in a step, in microseconds.
    pub prefill_us_per_token: f64,
    /// Added per evicted KV block, in microseconds.
    pub evict_us_per_block: f64,
    /// Token budget of one step (chunked prefill splits longer prompts across steps).
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Reuse KV blocks of identical prompt prefixes.
    pub prefix_caching: bool,
    /// Draft tokens proposed per decode step (0 turns speculative decoding off).
    pub num_speculative_tokens: usize,
    /// Probability that each draft token is accepted (drafts after a rejection are discarded).
    pub spec_accept_prob: f64,
    /// Make every n-th request (counted in arrival order, warm-up included) fail half-way through
    /// its output with an engine error; 0 never fails. For testing failure accounting.
    pub fail_every: usize,
    /// Seeds the speculative acceptance draws.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            block_size: 16,
            kv_blocks: 2048,
            // 22 layers × 2 (K, V) × 4 KV heads × 64 dims × 2 bytes.
            kv_bytes_per_token: 22 * 2 * 4 * 64 * 2,
            weights_bytes: 2_200_000_000,
            step_base_us: 8000.0,
            decode_us_per_seq: 400.0,
            prefill_us_per_token: 40.0,
            evict_us_per_block: 50.0,
            max_batched_tokens: 2048,
            max_num_seqs: 256,
            prefix_caching: true,
            num_speculative_tokens: 0,
            spec_accept_prob: 0.7,
            fail_every: 0,
            seed: 0,
        }
    }
}

impl MockConfig {
    /// Checks the parameters; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("block_size", self.block_size),
            ("kv_blocks", self.kv_blocks),
            ("max_batched_tokens", self.max_batched_tokens),
            ("max_num_seqs", self.max_num_seqs),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("mock.{name} must be at least 1"));
            }
        }
        // The engine allocates per-block tables up front, and byte figures multiply these:
        // bounds far above any real engine keep both from aborting or overflowing.
        let at_most = [
            ("block_size", self.block_size as u64, 1 << 16),
            ("kv_blocks", self.kv_blocks as u64, 1 << 24),
            ("kv_bytes_per_token", self.kv_bytes_per_token, 1 << 30),
            ("weights_bytes", self.weights_bytes, 1 << 50),
        ];
        for (name, value, limit) in at_most {
            if value > limit {
                return Err(format!("mock.{name} must be at most {limit}, not {value}"));
            }
        }
        let times = [
            ("step_base_us", self.step_base_us),
            ("decode_us_per_seq", self.decode_us_per_seq),
            ("prefill_us_per_token", self.prefill_us_per_token),
            ("evict_us_per_block", self.evict_us_per_block),
        ];
        for (name, value) in times {
            if !(value.is_finite() && (0.0..=1e9).contains(&value)) {
                return Err(format!(
                    "mock.{name} must be a number of microseconds between 0 and 1e9, not {value}"
                ));
            }
        }
        if self.step_base_us == 0.0 && self.decode_us_per_seq == 0.0 {
            return Err(
                "mock.step_base_us and mock.decode_us_per_seq cannot both be 0: \
                        decode steps would take no time"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.spec_accept_prob) {
            return Err(format!(
                "mock.spec_accept_prob must lie in [0, 1], not {}",
                self.spec_accept_prob
            ));
        }
        Ok(())
    }
}

/// The mock backend.
pub struct MockBackend {
    config: MockConfig,
    model: String,
    clock: Clock,
    engine: Mutex<Option<EngineHandle>>,
}

struct EngineHandle {
    requests: mpsc::UnboundedSender<Arrival>,
    stats: Arc<Mutex<Stats>>,
}

/// A request handed to the engine task.
struct Arrival {
    prompt: String,
    max_output_tokens: usize,
    events: mpsc::UnboundedSender<StreamEvent>,
}

impl MockBackend {
    pub fn new(config: MockConfig, model: Option<String>) -> Result<Self, BackendError> {
        config.validate().map_err(BackendError::Setup)?;
        Ok(MockBackend {
            config,
            model: model.unwrap_or_else(|| "mock".to_string()),
            clock: Clock::virtual_time(),
            engine: Mutex::new(None),
        })
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Option<EngineHandle>> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Backend for MockBackend {
    fn name(&self) -> &str {
        "mock"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    async fn start_workload(&self, _workload: &Workload) -> Result<(), BackendError> {
        // A fresh engine per workload: each workload's figures are its own, and running one
        // workload alone gives the same numbers as running it inside `year1`.
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let engine = Engine::new(self.config.clone(), self.clock.clone(), stats.clone());
        tokio::spawn(engine.run(rx));
        *self.engine() = Some(EngineHandle {
            requests: tx,
            stats,
        });
        Ok(())
    }

    fn generate(&self, request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sent = match &*self.engine() {
            Some(engine) => engine
                .requests
                .send(Arrival {
                    prompt: request.prompt,
                    max_output_tokens: request.max_output_tokens,
                    events: tx,
                })
                .is_ok(),
            None => false,
        };
        if !sent {
            let error = RequestError::new(
                ErrorKind::Engine,
                "the mock engine is not running (start_workload was not called)",
            );
            return Box::pin(futures::stream::iter([StreamEvent::Error(error)]));
        }
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        }))
    }

    async fn reset_statistics(&self) {
        if let Some(engine) = &*self.engine() {
            let mut stats = engine.stats.lock().unwrap_or_else(|e| e.into_inner());
            let (last_mem, now) = (stats.last_mem_bytes, self.clock.now());
            *stats = Stats::default();
            stats.last_mem_bytes = last_mem;
            stats.peak_mem_bytes = last_mem;
            stats.since = now;
            stats.last_sample = now;
        }
    }

    async fn finish_workload(&self) -> Result<EngineFigures, BackendError> {
        // Dropping the handle closes the request channel, so the engine task ends.
        let Some(engine) = self.engine().take() else {
            return Ok(EngineFigures::default());
        };
        let mut stats = engine.stats.lock().unwrap_or_else(|e| e.into_inner());
        let level = stats.last_mem_bytes;
        stats.sample_memory(self.clock.now(), level);
        let elapsed = (stats.last_sample - stats.since).as_secs_f64();
        let avg_bytes = if elapsed > 0.0 {
            stats.mem_byte_seconds / elapsed
        } else {
            stats.last_mem_bytes as f64
        };
        const MB: f64 = 1024.0 * 1024.0;
        Ok(EngineFigures {
            kv: Some(KvFigures {
                used_tokens: stats.peak_kv_tokens,
                used_bytes: stats.peak_kv_bytes,
                prefix_hit_tokens: stats.prefix_hit_tokens,
                prefix_query_tokens: stats.prefix_query_tokens,
                evict_count: stats.evicted_blocks,
                evict_ms: stats.evict_ns as f64 / 1e6,
            }),
            memory: Some(MemoryFigures {
                peak_mb: stats.peak_mem_bytes as f64 / MB,
                avg_mb: avg_bytes / MB,
            }),
            spec: Some(SpecFigures {
                draft_tokens: stats.draft_tokens,
                accepted_tokens: stats.accepted_tokens,
            }),
            source: Some(FigureSource::Simulated),
            connections: None,
            server_timings: None,
            spec_mean_acceptance_length: None,
        })
    }
}
