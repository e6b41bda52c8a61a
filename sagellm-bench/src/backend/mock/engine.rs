//! The simulated engine: the task that schedules steps under a token budget, advances the
//! virtual clock by each step's cost and streams tokens to the sequences (see the module above).

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use super::kv_cache::{block_hash, BlockId, KvCache};
use super::{Arrival, MockConfig};
use crate::backend::clock::Clock;
use crate::backend::{ErrorKind, RequestError, StreamEvent, Usage};

/// Counters over the measured part of a workload.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) peak_kv_tokens: u64,
    pub(super) peak_kv_bytes: u64,
    pub(super) prefix_hit_tokens: u64,
    pub(super) prefix_query_tokens: u64,
    pub(super) evicted_blocks: u64,
    pub(super) evict_ns: u64,
    pub(super) draft_tokens: u64,
    pub(super) accepted_tokens: u64,
    pub(super) peak_mem_bytes: u64,
    pub(super) last_mem_bytes: u64,
    /// Integral of memory over virtual time, for the time-weighted average.
    pub(super) mem_byte_seconds: f64,
    pub(super) since: Duration,
    pub(super) last_sample: Duration,
}

impl Stats {
    /// Accounts memory held at `last_mem_bytes` until `now`, then records the new level.
    pub(super) fn sample_memory(&mut self, now: Duration, bytes: u64) {
        if now > self.last_sample {
            self.mem_byte_seconds +=
                self.last_mem_bytes as f64 * (now - self.last_sample).as_secs_f64();
            self.last_sample = now;
        }
        self.last_mem_bytes = bytes;
        self.peak_mem_bytes = self.peak_mem_bytes.max(bytes);
    }
}

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

pub(super) struct Engine {
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
    pub(super) fn new(config: MockConfig, clock: Clock, stats: Arc<Mutex<Stats>>) -> Self {
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

    pub(super) async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Arrival>) {
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
            let hit_tokens = hits.len() * self.kv.block_size();
            let pending = self.seq(slot).tokens.len() - self.seq(slot).computed - hit_tokens;
            let n = pending.min(budget);
            let computed = self.seq(slot).computed;
            let new_blocks = self.kv.blocks_for(computed + hit_tokens + n)
                - self.seq(slot).blocks.len()
                - hits.len();
            let hits_now_free = hits.iter().filter(|&&b| self.kv.is_free(b)).count();
            if new_blocks > self.kv.free_blocks() - hits_now_free {
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
        let bs = self.kv.block_size();
        let seq = self.seqs[slot]
            .as_ref()
            .expect("waiting slots hold live sequences");
        // At least one prompt token is always computed, so the step has something to sample.
        let lookup_blocks = (seq.prompt_len - 1) / bs;
        let mut previous = 0u64;
        let mut hits = Vec::new();
        for b in 0..lookup_blocks {
            let hash = block_hash(previous, &seq.tokens[b * bs..(b + 1) * bs]);
            match self.kv.cached(hash) {
                Some(block) => hits.push(block),
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
        let bs = self.kv.block_size();
        let seq = self.seqs[slot]
            .as_mut()
            .expect("waiting slots hold live sequences");
        let hit_tokens = hits.len() * bs;
        // The runner keeps the first report: a preempted sequence looks its prefix up again.
        let _ = seq
            .events
            .send(StreamEvent::PrefixCached { tokens: hit_tokens });
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
        let bs = self.kv.block_size();
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
        let bs = self.kv.block_size();
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
            (self.kv.block_size() as u64).saturating_mul(self.config.kv_bytes_per_token);
        let kv_bytes = (self.kv.in_use() as u64).saturating_mul(block_bytes);
        let now = self.clock.now();
        let weights = self.config.weights_bytes;
        let mut s = self.stats();
        s.peak_kv_bytes = s.peak_kv_bytes.max(kv_bytes);
        s.sample_memory(now, weights.saturating_add(kv_bytes));
    }
}
