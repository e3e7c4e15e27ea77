//! [`ChunkClaims`]: which chunks of a Nydus blob a read is fetching and decoding, so that two
//! reads never fetch one chunk twice, while a read that shares a chunk with one already
//! running (the chunk across the boundary of two windows) fetches the rest of its chunks
//! meanwhile instead of waiting for that whole read first.
//!
//! Deadlock-free by construction: every claim takes a ticket, larger than all before it, and
//! a read only ever waits for claims older than its own ([`Claim::wait_theirs`]).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The chunks being read, each with the ticket of the claim that holds it.
#[derive(Debug, Default)]
pub(crate) struct ChunkClaims {
    held: Mutex<Held>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    next_ticket: u64,
    by: HashMap<usize, u64>,
}

impl Held {
    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

/// One read's chunks: those it holds, and those another (older) read held when it was made,
/// left to that read. Dropped, it frees what it holds.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    claims: &'a ChunkClaims,
    ticket: u64,
    mine: Vec<usize>,
    theirs: Vec<(usize, u64)>,
}

impl ChunkClaims {
    fn lock(&self) -> MutexGuard<'_, Held> {
        // Inserts and removes only: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hold the chunks of `chunks` that nobody holds, now; the others are left to the reads
    /// holding them ([`Claim::theirs`]), to be waited for before they are decoded
    /// ([`Claim::wait_theirs`]).
    pub(crate) fn claim_free(&self, chunks: &[usize]) -> Claim<'_> {
        let mut held = self.lock();
        let ticket = held.ticket();
        let mut mine = Vec::with_capacity(chunks.len());
        let mut theirs = Vec::new();
        for &c in chunks {
            match held.by.get(&c) {
                Some(&t) => theirs.push((c, t)),
                None => {
                    held.by.insert(c, ticket);
                    mine.push(c);
                }
            }
        }
        Claim {
            claims: self,
            ticket,
            mine,
            theirs,
        }
    }
}

impl Claim<'_> {
    /// The chunks left to other reads, not waited for yet.
    pub(crate) fn theirs(&self) -> impl Iterator<Item = usize> + '_ {
        self.theirs.iter().map(|&(c, _)| c)
    }

    /// Wait until each read that held one of [`theirs`](Self::theirs) when this claim was
    /// made has ended (the chunk is then decoded in the blob's cache, unless that read failed
    /// or the cache let it go: the decoder then fetches it). Returns how many chunks it
    /// waited for.
    pub(crate) fn wait_theirs(&mut self) -> usize {
        if self.theirs.is_empty() {
            return 0;
        }
        let claims = self.claims;
        let mut held = claims.lock();
        while self.theirs.iter().any(|(c, t)| held.by.get(c) == Some(t)) {
            held = claims.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        let n = self.theirs.len();
        self.theirs.clear();
        n
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.lock();
        for c in &self.mine {
            if held.by.get(c) == Some(&self.ticket) {
                held.by.remove(c);
            }
        }
        drop(held);
        self.claims.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn a_shared_chunk_is_left_to_its_holder_and_the_rest_is_claimed_at_once() {
        let claims = ChunkClaims::default();
        let first = claims.claim_free(&[1, 2]);
        // The second read shares chunk 2: it holds 3 and 4 without waiting.
        let second = claims.claim_free(&[2, 3, 4]);
        assert_eq!(second.mine, vec![3, 4]);
        assert_eq!(second.theirs().collect::<Vec<_>>(), vec![2]);
        // A third read over 4 leaves it to the second.
        let third = claims.claim_free(&[4, 5]);
        assert_eq!(third.theirs().collect::<Vec<_>>(), vec![4]);
        drop(first);
        drop(second);
        // Once its holders are gone, a chunk is free again.
        let fourth = claims.claim_free(&[1, 2, 3, 4, 5]);
        assert_eq!(fourth.mine, vec![1, 2, 3, 4]);
        assert_eq!(fourth.theirs().collect::<Vec<_>>(), vec![5]);
        drop(third);
        drop(fourth);
        assert!(claims.lock().by.is_empty());
    }

    #[test]
    fn waiting_for_theirs_ends_when_their_holder_ends_not_when_a_newer_one_does() {
        let claims = ChunkClaims::default();
        let first = claims.claim_free(&[7]);
        let mut second = claims.claim_free(&[7, 8]);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let n = second.wait_theirs();
                done.store(true, Ordering::SeqCst);
                n
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!done.load(Ordering::SeqCst), "waited for nothing");
            drop(first);
            assert_eq!(waiter.join().unwrap(), 1);
        });
        assert_eq!(second.wait_theirs(), 0, "waited for twice");
        drop(second);
        // A chunk its holder gave up and a newer read took: not waited for.
        let first = claims.claim_free(&[9]);
        let mut second = claims.claim_free(&[9]);
        drop(first);
        let third = claims.claim_free(&[9]);
        assert_eq!(third.mine, vec![9]);
        assert_eq!(second.wait_theirs(), 1);
        drop(third);
        drop(second);
        assert!(claims.lock().by.is_empty());
    }
}
