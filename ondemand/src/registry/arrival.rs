//! [`Arrival`]: a value one thread is fetching and others wait for (an early fetch's
//! bytes, a bootstrap still on the wire while the kernel already mounts it).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A value on its way: pending until [`Promise::keep`] (or [`Promise::fail`]) sets it once;
/// [`Arrival::wait`] blocks until then.
pub(crate) struct Arrival<T> {
    state: Mutex<State<T>>,
    done: Condvar,
}

enum State<T> {
    Pending,
    Ready(T),
    Failed(String),
}

/// The one right to settle an [`Arrival`]. Dropped unsettled (its thread panicked or
/// returned early), it fails the arrival: nobody waits for a value that cannot come.
pub(crate) struct Promise<T>(Option<Arc<Arrival<T>>>);

impl<T: Clone> Arrival<T> {
    /// A value already here.
    pub(crate) fn ready(value: T) -> Arc<Arrival<T>> {
        Arc::new(Arrival {
            state: Mutex::new(State::Ready(value)),
            done: Condvar::new(),
        })
    }

    /// A value to come, and the promise that brings it.
    pub(crate) fn pending() -> (Arc<Arrival<T>>, Promise<T>) {
        let arrival = Arc::new(Arrival {
            state: Mutex::new(State::Pending),
            done: Condvar::new(),
        });
        (Arc::clone(&arrival), Promise(Some(arrival)))
    }

    /// The value (or why it did not come), once settled.
    pub(crate) fn wait(&self) -> Result<T, String> {
        self.wait_until(None)
            .unwrap_or_else(|| Err("no deadline, yet timed out".into()))
    }

    /// [`wait`](Self::wait), or `None` if `within` passed first.
    pub(crate) fn wait_within(&self, within: Duration) -> Option<Result<T, String>> {
        self.wait_until(Some(Instant::now() + within))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Option<Result<T, String>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*st {
                State::Ready(v) => return Some(Ok(v.clone())),
                State::Failed(e) => return Some(Err(e.clone())),
                State::Pending => {}
            }
            st = match deadline {
                None => self.done.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.done
                        .wait_timeout(st, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

impl<T> Promise<T> {
    /// Settle the arrival with `value`.
    pub(crate) fn keep(mut self, value: T) {
        if let Some(a) = self.0.take() {
            a.settle(State::Ready(value));
        }
    }

    /// Settle the arrival as failed, with `why`.
    pub(crate) fn fail(mut self, why: String) {
        if let Some(a) = self.0.take() {
            a.settle(State::Failed(why));
        }
    }
}

impl<T> Arrival<T> {
    /// The first settlement wins.
    fn settle(&self, state: State<T>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*st, State::Pending) {
            *st = state;
        }
        drop(st);
        self.done.notify_all();
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.settle(State::Failed("its fetch ended without a result".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_get_the_value_or_the_failure() {
        let (a, p) = Arrival::<u32>::pending();
        assert_eq!(a.wait_within(Duration::from_millis(10)), None);
        let waiter = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || a.wait())
        };
        p.keep(7);
        assert_eq!(waiter.join().unwrap(), Ok(7));
        assert_eq!(a.wait(), Ok(7));

        let (a, p) = Arrival::<u32>::pending();
        p.fail("no".into());
        assert_eq!(a.wait(), Err("no".into()));
    }

    #[test]
    fn a_promise_dropped_unkept_fails_its_arrival() {
        let (a, p) = Arrival::<u32>::pending();
        let waiter = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || a.wait())
        };
        std::thread::spawn(move || {
            let _p = p;
            panic!("the fetch's thread panicked");
        })
        .join()
        .unwrap_err();
        assert!(waiter.join().unwrap().is_err());
    }
}
