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

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Backend, BackendError, EngineFigures, ErrorKind, FigureSource, GenerationRequest, KvFigures,
    MemoryFigures, RequestError, SpecFigures, StreamEvent, Usage,
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

/// Counters over the measured part of a workload.
#[derive(Debug, Default)]
struct Stats {
    peak_kv_tokens: u64,
    peak_kv_bytes: u64,
    prefix_hit_tokens: u64,
    prefix_query_tokens: u64,
    evicted_blocks: u64,
    evict_ns: u64,
    draft_tokens: u64,
    accepted_tokens: u64,
    peak_mem_bytes: u64,
    last_mem_bytes: u64,
    /// Integral of memory over virtual time, for the time-weighted average.
    mem_byte_seconds: f64,
    since: Duration,
    last_sample: Duration,
}

impl Stats {
    /// Accounts memory held at `last_mem_bytes` until `now`, then records the new level.
    fn sample_memory(&mut self, now: Duration, bytes: u64) {
        if now > self.last_sample {
            self.mem_byte_seconds +=
                self.last_mem_bytes as f64 * (now - self.last_sample).as_secs_f64();
            self.last_sample = now;
        }
        self.last_mem_bytes = bytes;
        self.peak_mem_bytes = self.peak_mem_bytes.max(bytes);
    }
}

type BlockId = usize;

/// One sequence inside the engine.
struct Seq {
    /// Token ids: the prompt, then every generated token.
    tokens: Vec<u64>,
    prompt_len: usize,
    max_output_tokens: usize,
    generated: usize,
    /// Tokens whose KV is in the cache.
    computed: usize,
    blocks: Vec<BlockId>,
    /// Prompt blocks already registered in the prefix cache.
    hashed_blocks: usize,
    /// Whether the prefix cache was consulted since the sequence last lost its blocks.
    prefix_checked: bool,
    /// The generated-token count at which this request fails (`fail_every`).
    fail_at: Option<usize>,
    events: mpsc::UnboundedSender<StreamEvent>,
}

impl Seq {
    fn remaining_output(&self) -> usize {
        self.max_output_tokens - self.generated
    }
}

/// The paged KV cache: blocks, their reference counts, and the prefix index.
struct KvCache {
    block_size: usize,
    ref_count: Vec<u32>,
    /// The prefix hash a block holds, if it is a full prompt block in the index.
    hash_of: Vec<Option<u64>>,
    by_hash: HashMap<u64, BlockId>,
    /// Blocks with no reference, least recently freed first; cached ones among them keep
    /// their contents until reused.
    free: VecDeque<BlockId>,
}

impl KvCache {
    fn new(blocks: usize, block_size: usize) -> Self {
        KvCache {
            block_size,
            ref_count: vec![0; blocks],
            hash_of: vec![None; blocks],
            by_hash: HashMap::new(),
            free: (0..blocks).collect(),
        }
    }

    fn capacity(&self) -> usize {
        self.ref_count.len()
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Takes a free block; returns it and whether cached contents were evicted to get it.
    fn allocate(&mut self) -> Option<(BlockId, bool)> {
        let block = self.free.pop_front()?;
        let evicted = match self.hash_of[block].take() {
            Some(hash) => {
                self.by_hash.remove(&hash);
                true
            }
            None => false,
        };
        self.ref_count[block] = 1;
        Some((block, evicted))
    }

    fn release(&mut self, block: BlockId) {
        self.ref_count[block] -= 1;
        if self.ref_count[block] == 0 {
            self.free.push_back(block);
        }
    }

    /// Takes a reference to a cached block.
    fn take(&mut self, block: BlockId) {
        if self.ref_count[block] == 0 {
            // Free lists are short (thousands at most); a linear removal keeps the LRU order.
            self.free.retain(|&b| b != block);
        }
        self.ref_count[block] += 1;
    }

    fn register(&mut self, block: BlockId, hash: u64) {
        if self.hash_of[block].is_none() && !self.by_hash.contains_key(&hash) {
            self.hash_of[block] = Some(hash);
            self.by_hash.insert(hash, block);
        }
    }

    fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }
}

/// The hash of prompt block `index`, chained over every block before it.
fn block_hash(previous: u64, tokens: &[u64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    previous.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The mock's tokenizer: one token per whitespace-separated word, the id a hash of the word.
fn token_ids(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(|word| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            word.hash(&mut h);
            h.finish()
        })
        .collect()
}

const OUTPUT_WORDS: &[&str] = &[
    " the",
    " engine",
    " streams",
    " tokens",
    " from",
    " a",
    " simulated",
    " batch",
    " of",
    " requests",
    " with",
    " paged",
    " cache",
    " blocks",
    " and",
    " steps",
];

/// What one step does, decided before its time passes.
#[derive(Default)]
struct StepPlan {
    /// (sequence slot, tokens to compute) for each scheduled sequence.
    work: Vec<(usize, usize)>,
    decode_seqs: usize,
    prefill_tokens: usize,
    draft_tokens: usize,
    evicted_blocks: usize,
}

struct Engine {
    config: MockConfig,
    clock: Clock,
    stats: Arc<Mutex<Stats>>,
    kv: KvCache,
    /// Sequence slots; `None` once finished.
    seqs: Vec<Option<Seq>>,
    /// Slots of running sequences, in admission order.
    running: Vec<usize>,
    /// Slots of waiting sequences, next first.
    waiting: VecDeque<usize>,
    arrivals: usize,
    rng: ChaCha8Rng,
}

impl Engine {
    fn new(config: MockConfig, clock: Clock, stats: Arc<Mutex<Stats>>) -> Self {
        let kv = KvCache::new(config.kv_blocks, config.block_size);
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            let now = clock.now();
            s.since = now;
            s.last_sample = now;
            s.sample_memory(now, config.weights_bytes);
        }
        Engine {
            config,
            clock,
            stats,
            kv,
            seqs: Vec::new(),
            running: Vec::new(),
            waiting: VecDeque::new(),
            arrivals: 0,
            rng,
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Arrival>) {
        loop {
            // Requests that arrived during the last step join this one.
            while let Ok(arrival) = requests.try_recv() {
                self.enqueue(arrival);
            }
            if self.running.is_empty() && self.waiting.is_empty() {
                match requests.recv().await {
                    Some(arrival) => self.enqueue(arrival),
                    None => return,
                }
                continue;
            }
            let plan = self.schedule();
            if plan.work.is_empty() {
                // Cannot happen: with nothing running every block is free, and `enqueue` only
                // accepts requests that fit alone. Fail the head rather than spin if it does.
                self.fail_head_of_queue();
                continue;
            }
            self.record_memory();
            let c = &self.config;
            let step_us = c.step_base_us
                + c.decode_us_per_seq * plan.decode_seqs as f64
                + c.prefill_us_per_token * (plan.prefill_tokens + plan.draft_tokens) as f64;
            let evict_ns = (c.evict_us_per_block * plan.evicted_blocks as f64 * 1e3).round() as u64;
            let step = Duration::from_nanos((step_us * 1e3).round() as u64 + evict_ns);
            {
                let mut s = self.stats();
                s.evict_ns += evict_ns;
                s.evicted_blocks += plan.evicted_blocks as u64;
            }
            self.clock.sleep(step).await;
            let finished = self.complete(plan);
            self.record_kv_tokens();
            for slot in finished {
                self.release(slot);
            }
            self.record_memory();
        }
    }

    fn enqueue(&mut self, arrival: Arrival) {
        self.arrivals += 1;
        let fail_at = (self.config.fail_every > 0 && self.arrivals % self.config.fail_every == 0)
            .then_some(arrival.max_output_tokens / 2);
        let tokens = token_ids(&arrival.prompt);
        let seq = Seq {
            prompt_len: tokens.len(),
            tokens,
            max_output_tokens: arrival.max_output_tokens,
            generated: 0,
            computed: 0,
            blocks: Vec::new(),
            hashed_blocks: 0,
            prefix_checked: false,
            fail_at,
            events: arrival.events,
        };
        if seq.prompt_len == 0 || seq.max_output_tokens == 0 {
            let _ = seq.events.send(StreamEvent::Error(RequestError::new(
                ErrorKind::Engine,
                "the prompt and the output must each hold at least one token",
            )));
            return;
        }
        // The last generated token is never written to the cache.
        let needed = self
            .kv
            .blocks_for(seq.prompt_len + seq.max_output_tokens - 1);
        if needed > self.kv.capacity() {
            let _ = seq.events.send(StreamEvent::Error(RequestError::new(
                ErrorKind::Engine,
                format!(
                    "the request needs {needed} KV blocks but the cache holds {}; \
                     raise mock.kv_blocks or shorten the workload",
                    self.kv.capacity()
                ),
            )));
            return;
        }
        self.seqs.push(Some(seq));
        self.waiting.push_back(self.seqs.len() - 1);
    }

    fn seq(&mut self, slot: usize) -> &mut Seq {
        self.seqs[slot]
            .as_mut()
            .expect("scheduled slots hold live sequences")
    }

    /// Grows `slot`'s block list to hold `tokens` tokens; false if the cache is out of blocks.
    fn grow(&mut self, slot: usize, tokens: usize, plan: &mut StepPlan) -> bool {
        let needed = self.kv.blocks_for(tokens);
        while self.seq(slot).blocks.len() < needed {
            match self.kv.allocate() {
                Some((block, evicted)) => {
                    plan.evicted_blocks += usize::from(evicted);
                    self.seq(slot).blocks.push(block);
                }
                None => return false,
            }
        }
        true
    }

    /// Frees every block of `slot` and puts it back at the front of the queue, to recompute.
    fn preempt(&mut self, slot: usize, plan: &mut StepPlan) {
        let seq = self.seqs[slot]
            .as_mut()
            .expect("running slots hold live sequences");
        let blocks = std::mem::take(&mut seq.blocks);
        seq.computed = 0;
        seq.hashed_blocks = 0;
        seq.prefix_checked = false;
        plan.evicted_blocks += blocks.len();
        for block in blocks {
            self.kv.release(block);
        }
        self.running.retain(|&s| s != slot);
        self.waiting.push_front(slot);
    }

    /// Tokens `slot` computes this step, within `budget`, and the draft tokens among them.
    fn tokens_to_compute(&mut self, slot: usize, budget: usize) -> (usize, usize) {
        let spec = self.config.num_speculative_tokens;
        let seq = self.seq(slot);
        let pending = seq.tokens.len() - seq.computed;
        if pending == 1 && seq.generated > 0 && spec > 0 {
            // Never draft beyond the requested output.
            let drafts = spec.min(seq.remaining_output().saturating_sub(1));
            let drafts = drafts.min(budget.saturating_sub(1));
            (1 + drafts, drafts)
        } else {
            (pending.min(budget), 0)
        }
    }

    fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_batched_tokens;

        // Running sequences first, in admission order.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let slot = self.running[i];
            let (n, drafts) = self.tokens_to_compute(slot, budget);
            let target = self.seq(slot).computed + n;
            let mut scheduled = true;
            while !self.grow(slot, target, &mut plan) {
                // Out of blocks: preempt the most recently admitted sequence, possibly this one.
                // Victims come from the end, after `slot`, so none is in `plan.work` yet.
                let victim = *self.running.last().expect("slot is running");
                self.preempt(victim, &mut plan);
                if victim == slot {
                    scheduled = false;
                    break;
                }
            }
            if scheduled {
                plan.work.push((slot, n));
                budget -= n;
                let seq = self.seq(slot);
                if seq.generated > 0 && seq.tokens.len() - seq.computed == 1 {
                    plan.decode_seqs += 1;
                    plan.draft_tokens += drafts;
                } else {
                    plan.prefill_tokens += n;
                }
                i += 1;
            }
        }

        // Then waiting sequences, first come first served, while they fit. Admission is all or
        // nothing and never preempts: a waiting sequence holds no blocks, so it cannot starve
        // the running ones.
        while budget > 0 && self.running.len() < self.config.max_num_seqs {
            let Some(&slot) = self.waiting.front() else {
                break;
            };
            let hits = if self.config.prefix_caching && !self.seq(slot).prefix_checked {
                self.cached_prefix(slot)
            } else {
                Vec::new()
            };
            let hit_tokens = hits.len() * self.kv.block_size;
            let pending = self.seq(slot).tokens.len() - self.seq(slot).computed - hit_tokens;
            let n = pending.min(budget);
            let computed = self.seq(slot).computed;
            let new_blocks = self.kv.blocks_for(computed + hit_tokens + n)
                - self.seq(slot).blocks.len()
                - hits.len();
            let hits_now_free = hits.iter().filter(|&&b| self.kv.ref_count[b] == 0).count();
            if new_blocks > self.kv.free.len() - hits_now_free {
                break;
            }
            if self.config.prefix_caching && !self.seq(slot).prefix_checked {
                self.take_prefix(slot, hits);
            }
            let target = self.seq(slot).computed + n;
            let grown = self.grow(slot, target, &mut plan);
            debug_assert!(grown, "admission checked the free blocks");
            self.waiting.pop_front();
            self.running.push(slot);
            plan.work.push((slot, n));
            plan.prefill_tokens += n;
            budget -= n;
        }
        plan
    }

    /// Cached blocks holding `slot`'s leading full prompt blocks, without taking them.
    fn cached_prefix(&mut self, slot: usize) -> Vec<BlockId> {
        let bs = self.kv.block_size;
        let seq = self.seqs[slot]
            .as_ref()
            .expect("waiting slots hold live sequences");
        // At least one prompt token is always computed, so the step has something to sample.
        let lookup_blocks = (seq.prompt_len - 1) / bs;
        let mut previous = 0u64;
        let mut hits = Vec::new();
        for b in 0..lookup_blocks {
            let hash = block_hash(previous, &seq.tokens[b * bs..(b + 1) * bs]);
            match self.kv.by_hash.get(&hash) {
                Some(&block) => hits.push(block),
                None => break,
            }
            previous = hash;
        }
        hits
    }

    /// Points `slot`'s first blocks at the cached `hits` and counts the lookup.
    fn take_prefix(&mut self, slot: usize, hits: Vec<BlockId>) {
        for &block in &hits {
            self.kv.take(block);
        }
        let bs = self.kv.block_size;
        let seq = self.seqs[slot]
            .as_mut()
            .expect("waiting slots hold live sequences");
        let hit_tokens = hits.len() * bs;
        seq.prefix_checked = true;
        seq.blocks = hits;
        seq.computed = hit_tokens;
        seq.hashed_blocks = seq.blocks.len();
        let prompt_len = seq.prompt_len as u64;
        let mut s = self.stats();
        s.prefix_query_tokens += prompt_len;
        s.prefix_hit_tokens += hit_tokens as u64;
    }

    fn fail_head_of_queue(&mut self) {
        if let Some(slot) = self.waiting.pop_front() {
            if let Some(seq) = self.seqs[slot].take() {
                let _ = seq.events.send(StreamEvent::Error(RequestError::new(
                    ErrorKind::Engine,
                    "the simulated engine could not schedule this request",
                )));
                for block in seq.blocks {
                    self.kv.release(block);
                }
            }
        }
    }

    /// Applies a finished step: caches new prompt blocks, samples tokens, streams them.
    fn complete(&mut self, plan: StepPlan) -> Vec<usize> {
        let bs = self.kv.block_size;
        let accept_prob = self.config.spec_accept_prob;
        let mut finished = Vec::new();
        for (slot, n) in plan.work {
            let seq = self.seqs[slot]
                .as_mut()
                .expect("scheduled slots hold live sequences");
            let was_decode = seq.generated > 0 && seq.tokens.len() - seq.computed == 1;
            let drafts = if was_decode { n - 1 } else { 0 };
            // Draft tokens are accepted one by one until the first rejection.
            let mut accepted = 0;
            while accepted < drafts && self.rng.gen_bool(accept_prob) {
                accepted += 1;
            }
            seq.computed += n - (drafts - accepted);
            if drafts > 0 {
                let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                s.draft_tokens += drafts as u64;
                s.accepted_tokens += accepted as u64;
            }

            // Register prompt blocks that are now complete in the prefix index.
            let full = seq.computed.min(seq.prompt_len) / bs;
            if self.config.prefix_caching && seq.hashed_blocks < full {
                let mut previous = 0u64;
                for b in 0..full {
                    let hash = block_hash(previous, &seq.tokens[b * bs..(b + 1) * bs]);
                    if b >= seq.hashed_blocks {
                        self.kv.register(seq.blocks[b], hash);
                    }
                    previous = hash;
                }
                seq.hashed_blocks = seq.hashed_blocks.max(full);
            }

            if seq.computed < seq.tokens.len() - accepted {
                continue; // a prefill chunk that did not reach the end of the prompt
            }
            // The step produced the next token, plus every accepted draft.
            let new_tokens = (1 + accepted).min(seq.remaining_output());
            let mut text = String::new();
            for _ in 0..new_tokens {
                let word = OUTPUT_WORDS[(slot + seq.generated) % OUTPUT_WORDS.len()];
                text.push_str(word);
                seq.tokens.push(token_ids(word)[0]);
                seq.generated += 1;
            }
            // Accepted drafts were computed above; the freshly sampled token was not.
            seq.computed = seq.tokens.len() - 1;
            let _ = seq.events.send(StreamEvent::Tokens {
                text,
                tokens: new_tokens,
            });
            if let Some(fail_at) = seq.fail_at {
                if seq.generated >= fail_at.max(1) {
                    let _ = seq.events.send(StreamEvent::Error(RequestError::new(
                        ErrorKind::Engine,
                        format!(
                            "simulated engine failure after {} tokens (mock.fail_every = {})",
                            seq.generated, self.config.fail_every
                        ),
                    )));
                    finished.push(slot);
                    continue;
                }
            }
            if seq.generated == seq.max_output_tokens {
                let _ = seq.events.send(StreamEvent::Done {
                    usage: Some(Usage {
                        prompt_tokens: seq.prompt_len,
                        completion_tokens: seq.generated,
                    }),
                });
                finished.push(slot);
            }
        }
        finished
    }

    /// Removes a finished sequence; its prompt blocks stay cached until reused.
    fn release(&mut self, slot: usize) {
        self.running.retain(|&s| s != slot);
        if let Some(seq) = self.seqs[slot].take() {
            for block in seq.blocks {
                self.kv.release(block);
            }
        }
    }

    /// Records the tokens resident in the KV cache (shared blocks once) at the end of a step,
    /// before finished sequences give their blocks back.
    fn record_kv_tokens(&mut self) {
        let bs = self.kv.block_size;
        let mut seen = HashSet::new();
        let mut tokens = 0u64;
        for &slot in &self.running {
            let seq = self.seqs[slot]
                .as_ref()
                .expect("running slots hold live sequences");
            for (j, &block) in seq.blocks.iter().enumerate() {
                if seen.insert(block) {
                    tokens += seq.computed.saturating_sub(j * bs).min(bs) as u64;
                }
            }
        }
        let mut s = self.stats();
        s.peak_kv_tokens = s.peak_kv_tokens.max(tokens);
    }

    /// Records the memory level from now on: weights plus every KV block in use. Blocks are
    /// counted whole, as a paged engine allocates them.
    fn record_memory(&mut self) {
        let block_bytes =
            (self.kv.block_size as u64).saturating_mul(self.config.kv_bytes_per_token);
        let kv_bytes = (self.kv.in_use() as u64).saturating_mul(block_bytes);
        let now = self.clock.now();
        let weights = self.config.weights_bytes;
        let mut s = self.stats();
        s.peak_kv_bytes = s.peak_kv_bytes.max(kv_bytes);
        s.sample_memory(now, weights.saturating_add(kv_bytes));
    }
}
