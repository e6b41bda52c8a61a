//! Prompt caches kept after their requests, so a later prompt that starts the same way skips
//! that part of prefill; dropped least recently used first when the KV budget is exceeded.

use std::time::Instant;

use super::kv_cache::KvCache;

struct Entry {
    cache: KvCache,
    last_used: u64,
}

/// The kept prompt caches.
#[derive(Default)]
pub struct PrefixCache {
    entries: Vec<Entry>,
    clock: u64,
}

/// What one eviction pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Evicted {
    pub entries: u64,
    pub ms: f64,
}

impl PrefixCache {
    /// The longest cached prefix of `prompt`, cut to at most `limit` tokens, as a fresh cache
    /// the request can extend. `None` when nothing matches.
    pub fn lookup(&mut self, prompt: &[u32], limit: usize) -> candle_core::Result<Option<KvCache>> {
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .map(|e| (e.cache.common_prefix(prompt).min(limit), e))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n);
        match best {
            Some((n, entry)) => {
                entry.last_used = self.clock;
                Ok(Some(entry.cache.prefix(n)?))
            }
            None => Ok(None),
        }
    }

    /// Keeps `cache` (a prompt's keys and values) unless an entry already holds all of it.
    pub fn insert(&mut self, cache: &KvCache) {
        self.clock += 1;
        if self
            .entries
            .iter()
            .any(|e| e.cache.common_prefix(cache.tokens()) == cache.len())
        {
            return;
        }
        // An entry this prompt extends is now redundant: the new one serves every lookup it did.
        self.entries
            .retain(|e| e.cache.common_prefix(cache.tokens()) < e.cache.len());
        // A copy of its own: the sequence goes on appending to `cache`'s buffers. A copy that
        // fails (out of memory) only means this prompt is not kept.
        if let Ok(copy) = cache.prefix(cache.len()) {
            self.entries.push(Entry {
                cache: copy,
                last_used: self.clock,
            });
        }
    }

    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.cache.len()).sum()
    }

    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.cache.bytes()).sum()
    }

    /// Drops least recently used entries until `in_use + self.tokens() <= budget` or none is left.
    pub fn evict_to_fit(&mut self, in_use: usize, budget: usize) -> Evicted {
        let started = Instant::now();
        let mut evicted = Evicted::default();
        while in_use + self.tokens() > budget && !self.entries.is_empty() {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
                .unwrap_or(0);
            drop(self.entries.swap_remove(oldest));
            evicted.entries += 1;
        }
        if evicted.entries > 0 {
            evicted.ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        evicted
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
