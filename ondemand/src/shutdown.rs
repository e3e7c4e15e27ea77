//! Stopping the workers: the [`Shutdown`] flag they look at every [`POLL_INTERVAL`], the
//! signals that trigger it, and the spawning of workers whose failure triggers it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a worker waits in `poll` before looking at the shutdown flag again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A flag that tells the daemon's workers to stop after the message they are handling.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the workers to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Trigger `shutdown` on the first SIGINT or SIGTERM.
///
/// Blocks both signals in the calling thread and reads them from a `signalfd` in a new thread.
/// Call it from the main thread **before** starting any other thread, so every thread
/// inherits the blocked mask and the signals reach the `signalfd` only.
///
/// # Errors
///
/// Failing to block the signals or to create the `signalfd`.
pub fn shutdown_on_signals(shutdown: Shutdown) -> io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match sfd.read_signal() {
                    Ok(Some(info)) => {
                        log::info!("signal {}: shutting down", info.ssi_signo);
                        shutdown.trigger();
                        return;
                    }
                    Ok(None) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        log::error!("signalfd: {e}");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// Start `work` on a scoped thread named `name`. If it fails (or the thread cannot start),
/// trigger `shutdown`, so the other workers stop, and keep the first error in `failure`.
pub(crate) fn spawn_worker<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: String,
    shutdown: &'scope Shutdown,
    failure: &'scope Mutex<Option<io::Error>>,
    work: F,
) where
    F: FnOnce() -> io::Result<()> + Send + 'scope,
{
    let fail = move |e: io::Error| {
        shutdown.trigger();
        failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    };
    let thread = name.clone();
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || {
            if let Err(e) = work() {
                log::error!("{thread}: {e}");
                fail(e);
            }
        });
    if let Err(e) = spawned {
        fail(e);
    }
}

/// Start `work` on a scoped thread named `name`, a helper the workers do not depend on (prefetch,
/// fill pool, reporter, recovery): a thread that cannot start is logged ("cannot start
/// `what`"), not fatal.
pub(crate) fn spawn_helper<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: String,
    what: &str,
    work: F,
) where
    F: FnOnce() + Send + 'scope,
{
    let spawned = std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, work);
    if let Err(e) = spawned {
        log::error!("cannot start {what}: {e}");
    }
}
