//! Bounded caches of decoded chunks and of inflated ZRan contexts.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Inflated ZRan contexts, oldest first, at most `capacity` bytes.
pub(super) struct ContextCache {
    pub(super) capacity: usize,
    bytes: usize,
    entries: VecDeque<(u32, Arc<[u8]>)>,
}

impl ContextCache {
    pub(super) fn new(capacity: usize) -> Self {
        ContextCache {
            capacity,
            bytes: 0,
            entries: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, index: u32) -> Option<Arc<[u8]>> {
        self.entries
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, d)| Arc::clone(d))
    }

    pub(super) fn insert(&mut self, index: u32, data: Arc<[u8]>) {
        let n = data.len();
        if n > self.capacity || self.get(index).is_some() {
            return;
        }
        // `bytes` is the sum of the cached entries' lengths (each <= capacity).
        self.bytes = self.bytes.saturating_add(n);
        self.entries.push_back((index, data));
        while self.bytes > self.capacity {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.len());
        }
    }
}

pub(super) struct ChunkCache {
    pub(super) capacity: usize,
    bytes: usize,
    pub(super) map: HashMap<u32, Arc<[u8]>>,
    order: VecDeque<u32>,
}

impl ChunkCache {
    pub(super) fn new(capacity: usize) -> Self {
        ChunkCache {
            capacity,
            bytes: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(super) fn get(&self, ci: u32) -> Option<Arc<[u8]>> {
        self.map.get(&ci).cloned()
    }

    pub(super) fn insert(&mut self, ci: u32, data: Arc<[u8]>) {
        let n = <[u8]>::len(&data);
        if n > self.capacity || self.map.contains_key(&ci) {
            return;
        }
        // `bytes` is the sum of the cached chunks' lengths (each <= capacity).
        self.bytes = self.bytes.saturating_add(n);
        self.map.insert(ci, data);
        self.order.push_back(ci);
        while self.bytes > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.map.remove(&old) {
                self.bytes = self.bytes.saturating_sub(<[u8]>::len(&d));
            }
        }
    }
}
