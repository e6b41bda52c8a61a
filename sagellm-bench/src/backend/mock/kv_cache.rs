//! The mock engine's paged KV cache: blocks of `block_size` tokens with reference counts, a
//! prefix index of full prompt blocks (hashed over the whole prefix), and a free list kept in
//! least-recently-freed order, so a freed block keeps its cached contents until it is reused.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

pub(super) type BlockId = usize;

/// The paged KV cache: blocks, their reference counts, and the prefix index.
pub(super) struct KvCache {
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
    pub(super) fn new(blocks: usize, block_size: usize) -> Self {
        KvCache {
            block_size,
            ref_count: vec![0; blocks],
            hash_of: vec![None; blocks],
            by_hash: HashMap::new(),
            free: (0..blocks).collect(),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.ref_count.len()
    }

    pub(super) fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Takes a free block; returns it and whether cached contents were evicted to get it.
    pub(super) fn allocate(&mut self) -> Option<(BlockId, bool)> {
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

    pub(super) fn release(&mut self, block: BlockId) {
        self.ref_count[block] -= 1;
        if self.ref_count[block] == 0 {
            self.free.push_back(block);
        }
    }

    /// Takes a reference to a cached block.
    pub(super) fn take(&mut self, block: BlockId) {
        if self.ref_count[block] == 0 {
            // Free lists are short (thousands at most); a linear removal keeps the LRU order.
            self.free.retain(|&b| b != block);
        }
        self.ref_count[block] += 1;
    }

    pub(super) fn register(&mut self, block: BlockId, hash: u64) {
        if self.hash_of[block].is_none() && !self.by_hash.contains_key(&hash) {
            self.hash_of[block] = Some(hash);
            self.by_hash.insert(hash, block);
        }
    }

    pub(super) fn block_size(&self) -> usize {
        self.block_size
    }

    /// True when no sequence holds `block` (it is on the free list, cached or not).
    pub(super) fn is_free(&self, block: BlockId) -> bool {
        self.ref_count[block] == 0
    }

    pub(super) fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// The cached block holding the prefix whose chained hash is `hash`.
    pub(super) fn cached(&self, hash: u64) -> Option<BlockId> {
        self.by_hash.get(&hash).copied()
    }

    pub(super) fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }
}

/// The hash of prompt block `index`, chained over every block before it.
pub(super) fn block_hash(previous: u64, tokens: &[u64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    previous.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_up_and_free_blocks_are_reused_least_recently_freed_first() {
        let mut kv = KvCache::new(3, 16);
        assert_eq!(
            (kv.blocks_for(0), kv.blocks_for(16), kv.blocks_for(17)),
            (0, 1, 2)
        );
        let (a, _) = kv.allocate().unwrap();
        let (b, _) = kv.allocate().unwrap();
        let (c, _) = kv.allocate().unwrap();
        assert_eq!((kv.in_use(), kv.free_blocks()), (3, 0));
        assert!(kv.allocate().is_none(), "a full cache gives no block");
        kv.release(b);
        kv.release(a);
        assert!(kv.is_free(a) && kv.is_free(b) && !kv.is_free(c));
        // b was freed first, so it is reused first.
        assert_eq!(kv.allocate().unwrap().0, b);
        assert_eq!(kv.allocate().unwrap().0, a);
    }

    #[test]
    fn a_registered_block_is_found_by_its_hash_until_reusing_it_evicts_it() {
        let mut kv = KvCache::new(2, 4);
        let hash = block_hash(0, &[1, 2, 3, 4]);
        let (a, evicted) = kv.allocate().unwrap();
        assert!(!evicted);
        kv.register(a, hash);
        assert_eq!(kv.cached(hash), Some(a));
        kv.release(a);
        // Freed, the block keeps its contents: a later prompt can take it back.
        assert_eq!(kv.cached(hash), Some(a));
        kv.take(a);
        assert!(!kv.is_free(a));
        assert_eq!(kv.free_blocks(), 1);
        kv.release(a);
        // The other block is the older free one; a is reused after it, and that evicts a.
        let (other, evicted) = kv.allocate().unwrap();
        assert!(other != a && !evicted);
        let (again, evicted) = kv.allocate().unwrap();
        assert_eq!(again, a);
        assert!(evicted, "reusing a cached block is an eviction");
        assert_eq!(kv.cached(hash), None);
    }

    #[test]
    fn a_shared_block_is_freed_when_its_last_holder_lets_go() {
        let mut kv = KvCache::new(1, 4);
        let (a, _) = kv.allocate().unwrap();
        kv.take(a);
        kv.release(a);
        assert!(!kv.is_free(a), "one holder is left");
        kv.release(a);
        assert!(kv.is_free(a));
    }

    #[test]
    fn equal_blocks_after_different_prefixes_hash_apart() {
        let tokens = [7, 8, 9, 10];
        assert_ne!(block_hash(1, &tokens), block_hash(2, &tokens));
        assert_eq!(block_hash(1, &tokens), block_hash(1, &tokens));
    }
}
