//! A bounded LRU cache of decoded extents, so that reading a compressed file in small
//! pieces (`read_at` with a 4 KiB buffer, directory blocks, fragments of the packed inode)
//! decodes each pcluster once.
//!
//! Entries are keyed by what determines the decoded bytes: the pcluster's device, byte
//! offset and stored length, its encoding, the number of bytes decoded and the offset
//! within the block (for interlaced pclusters). The capacity counts decoded bytes; the
//! least recently used entries are dropped to stay under it. An entry larger than the
//! whole capacity is not kept. Values are `Arc<[u8]>`, so a reader keeps its slice even
//! if the entry is evicted meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::decode::Encoding;

/// Default capacity: 32 MiB of decoded data (more than two of the largest extents the
/// kernel accepts).
pub(crate) const DEFAULT_CAPACITY: usize = 32 << 20;

/// What a cached extent was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) device: u16,
    pub(crate) offset: u64,
    pub(crate) stored_len: u64,
    pub(crate) encoding: Encoding,
    pub(crate) decoded_len: u64,
    pub(crate) block_offset: u32,
}

struct Entry {
    data: Arc<[u8]>,
    /// Stamp of the entry's latest use; older stamps in the queue are stale.
    stamp: u64,
}

struct State {
    map: HashMap<Key, Entry>,
    /// Use order, oldest first: `(key, stamp)`; entries whose stamp no longer matches
    /// were used again later and are skipped on eviction.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    capacity: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

/// The cache. All methods take `&self` (a mutex inside), so one cache serves all clones
/// of an image and all threads.
pub(crate) struct ZCache {
    state: Mutex<State>,
}

impl ZCache {
    pub(crate) fn new(capacity: usize) -> Self {
        ZCache {
            state: Mutex::new(State {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                capacity,
                clock: 0,
                hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent in a way
        // that matters (worst case: an accounting error), so recover from poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached extent for `key`, marking it most recently used.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<[u8]>> {
        let mut s = self.lock();
        // The u64 counters count calls; saturating keeps them panic-free.
        s.clock = s.clock.saturating_add(1);
        let stamp = s.clock;
        match s.map.get_mut(key) {
            Some(e) => {
                e.stamp = stamp;
                let data = e.data.clone();
                s.order.push_back((*key, stamp));
                s.hits = s.hits.saturating_add(1);
                s.compact();
                Some(data)
            }
            None => {
                s.misses = s.misses.saturating_add(1);
                None
            }
        }
    }

    /// Remember `data` for `key`, evicting the least recently used entries over the
    /// capacity.
    pub(crate) fn insert(&self, key: Key, data: Arc<[u8]>) {
        let mut s = self.lock();
        if data.len() > s.capacity {
            return;
        }
        s.clock = s.clock.saturating_add(1);
        let stamp = s.clock;
        let len = data.len();
        if let Some(old) = s.map.insert(key, Entry { data, stamp }) {
            // `bytes` is the sum of the cached entries' lengths: no underflow.
            s.bytes = s.bytes.saturating_sub(old.data.len());
        }
        s.bytes = s.bytes.saturating_add(len);
        s.order.push_back((key, stamp));
        s.evict();
        s.compact();
    }

    /// Change the capacity (in decoded bytes), evicting as needed; 0 disables caching.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let mut s = self.lock();
        s.capacity = capacity;
        s.evict();
    }

    pub(crate) fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// `(hits, misses, bytes held)`.
    pub(crate) fn stats(&self) -> (u64, u64, usize) {
        let s = self.lock();
        (s.hits, s.misses, s.bytes)
    }
}

impl State {
    fn evict(&mut self) {
        while self.bytes > self.capacity {
            let Some((key, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|e| e.stamp == stamp)
                && let Some(e) = self.map.remove(&key)
            {
                self.bytes = self.bytes.saturating_sub(e.data.len());
            }
        }
        if self.map.is_empty() {
            self.order.clear();
        }
    }

    /// Drop stale queue entries once they outnumber the live ones, so the queue stays
    /// proportional to the cache.
    fn compact(&mut self) {
        if self.order.len() > self.map.len().saturating_mul(2).saturating_add(64) {
            let map = &self.map;
            self.order
                .retain(|(k, stamp)| map.get(k).is_some_and(|e| e.stamp == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(offset: u64) -> Key {
        Key {
            device: 0,
            offset,
            stored_len: 4096,
            encoding: Encoding::Shifted,
            decoded_len: 4096,
            block_offset: 0,
        }
    }

    #[test]
    fn lru_eviction_by_bytes() {
        let c = ZCache::new(300);
        for i in 0..3 {
            c.insert(key(i), vec![i as u8; 100].into());
        }
        assert!(c.get(&key(0)).is_some()); // 0 is now the most recent
        c.insert(key(3), vec![3; 100].into()); // evicts 1, the least recent
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(0)).is_some());
        assert!(c.get(&key(2)).is_some());
        assert!(c.get(&key(3)).is_some());
        assert_eq!(c.stats().2, 300);
        // Too large to keep at all.
        c.insert(key(9), vec![0; 301].into());
        assert!(c.get(&key(9)).is_none());
        c.set_capacity(0);
        assert_eq!(c.stats().2, 0);
        assert!(c.get(&key(0)).is_none());
    }

    #[test]
    fn queue_stays_bounded() {
        let c = ZCache::new(1000);
        c.insert(key(1), vec![1; 10].into());
        for _ in 0..10_000 {
            assert!(c.get(&key(1)).is_some());
        }
        let s = c.lock();
        assert!(s.order.len() <= 2 * s.map.len() + 65);
    }
}
