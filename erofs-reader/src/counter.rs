//! [`Counter`]: the one atomic event counter for metrics.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic `u64` counter that any thread may bump through `&self`.
///
/// Counters are statistics, not synchronisation: updates are `Relaxed`, so a snapshot of
/// several counters taken while other threads work is not one instant, only each value is
/// exact. Wrapping past `u64::MAX` is not a concern for event and byte counts.
///
/// ```
/// use erofs_reader::Counter;
/// let reads = Counter::new();
/// reads.incr();
/// reads.add(4095);
/// assert_eq!(reads.get(), 4096);
/// ```
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Add one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to zero.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;
    use std::sync::Arc;

    #[test]
    fn counts_across_threads() {
        let c = Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || (0..1000).for_each(|_| c.incr()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.add(10);
        assert_eq!(c.get(), 4010);
        assert_eq!(format!("{c:?}"), "4010");
        c.reset();
        assert_eq!(c.get(), 0);
    }
}
