//! A pool thread's writes behind its decoding ([`Engine::with_write_behind`], off by
//! default): each fill-ahead job is produced (fetched and decoded) on the pool thread, then
//! handed with its buffer to a writer thread of its own, which writes it into the object's
//! sink while the pool thread produces the next job in a second buffer. Two buffers: at most
//! one job written while one is produced.
//!
//! A job stays claimed until its writer is done with it: a READ over it waits for the write
//! as for the decode. Its bytes are marked present only once their write returned; a write
//! that fails leaves them missing and the job released unwritten (logged, as any failed fill
//! ahead: the reader's own READ fetches them again).

use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;

use super::fill::Produced;
use super::pool::Job;
use super::{Engine, Object, Sink};
use crate::buf::AlignedBuf;
use crate::server::OnDemandServer;
use crate::shutdown::{POLL_INTERVAL, Shutdown};

/// A produced job on its way to the writer, with the buffer it was produced in.
struct Written<O, K> {
    object: Arc<Object<O, K>>,
    range: Range<u64>,
    produced: Produced,
    buf: AlignedBuf,
}

impl<S: OnDemandServer, K: Sink> Engine<S, K> {
    /// Run fill-ahead jobs until `shutdown` in buffers of `len` bytes, each job's write on a
    /// writer thread while the next one is produced (see the module's doc). Without a writer
    /// thread (it could not be started), every job is written on this thread.
    pub(crate) fn run_jobs_writing_behind(&self, shutdown: &Shutdown, len: usize) {
        let name = format!("{}-write", std::thread::current().name().unwrap_or("fill"));
        std::thread::scope(|scope| {
            // One job waiting for the writer at most; the two buffers bound it anyway.
            let (to_writer, jobs) = mpsc::sync_channel::<Written<S::Object, K>>(1);
            let (to_producer, returned) = mpsc::channel::<AlignedBuf>();
            let writer = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    for w in jobs {
                        self.write_job(w, &to_producer);
                    }
                });
            if let Err(e) = writer {
                log::warn!("no writer thread for the fill pool ({e}): writes on the pool thread");
                let mut buf = AlignedBuf::new(len);
                while !shutdown.is_triggered() {
                    if let Some(job) = self.pool.pop_wait(POLL_INTERVAL) {
                        self.run_job(&job.object, job.range, &mut buf);
                    }
                }
                return;
            }
            let mut spare = vec![AlignedBuf::new(len), AlignedBuf::new(len)];
            while !shutdown.is_triggered() {
                // A free buffer first (waiting for the write in flight if both are taken), so
                // that no job is taken from the queue (where a READ could still run it itself)
                // before it can be produced.
                let Some(buf) = spare.pop().or_else(|| returned.recv().ok()) else {
                    break;
                };
                let Some(job) = self.pool.pop_wait(POLL_INTERVAL) else {
                    spare.push(buf);
                    continue;
                };
                match self.produce_job(job, buf) {
                    Ok(w) => {
                        if let Err(mpsc::SendError(w)) = to_writer.send(w) {
                            // The writer is gone (it panicked): write here.
                            let (tx, rx) = mpsc::channel();
                            self.write_job(w, &tx);
                            spare.extend(rx.try_recv());
                        }
                    }
                    Err(buf) => spare.push(buf),
                }
            }
            // The writer finishes the job it has, then stops.
            drop(to_writer);
        });
    }

    /// Produce `job` into `buf`: what the writer then writes, or `buf` back when the job was
    /// done here (failed, object closed, or too long for one buffer: filled here, chunk
    /// after chunk).
    fn produce_job(
        &self,
        job: Job<S::Object, K>,
        mut buf: AlignedBuf,
    ) -> Result<Written<S::Object, K>, AlignedBuf> {
        let Job { object, range, .. } = job;
        if object.is_closed() || range.end - range.start > buf.len() as u64 {
            self.run_job(&object, range, &mut buf);
            return Err(buf);
        }
        match self.produce(&object, range.clone(), buf.as_mut_bytes(), false, &mut None) {
            Ok(produced) => Ok(Written {
                object,
                range,
                produced,
                buf,
            }),
            Err(e) => {
                self.finish_job(&object, range, Some(Err(e)));
                Err(buf)
            }
        }
    }

    /// Write a produced job, finish it (marked present only if the write returned; its claim
    /// released in any case) and hand its buffer back.
    fn write_job(&self, mut w: Written<S::Object, K>, to_producer: &mpsc::Sender<AlignedBuf>) {
        let result = self.write_produced(&w.object, &w.produced, w.buf.as_mut_bytes(), false);
        self.finish_job(&w.object, w.range, Some(result));
        // The producer may have stopped (shutdown) and dropped its end: the buffer goes.
        let _ = to_producer.send(w.buf);
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use cachefiles_proto::ObjectId;

    use super::*;
    use crate::engine::test_blob::SlowBlob;
    use crate::server::ObjectKey;

    const MIB: u64 = 1 << 20;

    /// An in-memory sink whose writes fail (`fail`), or wait until the fill after theirs
    /// started (`wait_for_next`: the `k`-th write, counted from 1, until `k + 1` fills
    /// started, for all but the `last`-th; an error after 10 s).
    #[derive(Debug)]
    struct TestSink {
        data: Mutex<Vec<u8>>,
        fail: bool,
        wait_for_next: Option<(Arc<AtomicUsize>, usize)>,
        writes: AtomicUsize,
    }

    impl Sink for TestSink {
        fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
            let k = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail {
                return Err(io::Error::from_raw_os_error(nix::libc::ENOSPC));
            }
            if let Some((started, last)) = &self.wait_for_next
                && k < *last
            {
                let t = Instant::now();
                while started.load(Ordering::SeqCst) <= k {
                    if t.elapsed() > Duration::from_secs(10) {
                        return Err(io::Error::other(format!(
                            "write {k}: the next fill did not start while it was in flight"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut d = self.data.lock().unwrap();
            let off = off as usize;
            if d.len() < off + data.len() {
                d.resize(off + data.len(), 0);
            }
            d[off..off + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    type E = Engine<SlowBlob, TestSink>;

    /// An engine over a `jobs` MiB blob, all of it queued as 1 MiB fill-ahead jobs.
    fn engine(
        jobs: u64,
        fail: bool,
        wait: bool,
    ) -> (E, Arc<Object<(), TestSink>>, Arc<AtomicUsize>) {
        let engine = Engine::new(SlowBlob::new((jobs * MIB) as usize, Duration::ZERO))
            .with_readahead(MIB)
            .with_write_behind(true);
        let started = engine.server().started();
        let key = ObjectKey {
            volume_key: b"v",
            cookie_key: b"blob",
        };
        let opened = engine.server().open(&key).unwrap();
        let sink = TestSink {
            data: Mutex::new(Vec::new()),
            fail,
            wait_for_next: wait.then(|| (Arc::clone(&started), jobs as usize)),
            writes: AtomicUsize::new(0),
        };
        let object = engine
            .open_object(ObjectId(1), b"v", b"blob", opened, sink)
            .unwrap();
        let batch = engine.pool.batch();
        for i in 0..jobs {
            for gap in object.claim_gaps(i * MIB..(i + 1) * MIB) {
                engine.pool.push(&object, gap, batch).unwrap();
            }
        }
        (engine, object, started)
    }

    /// Run one pool thread until the queue is drained and nothing is in flight.
    fn drain(engine: &E, object: &Object<(), TestSink>) {
        let stop = Shutdown::new();
        std::thread::scope(|scope| {
            scope.spawn(|| engine.fill_worker(&stop));
            let t = Instant::now();
            while engine.queued_fill_jobs() > 0 || !object.lock_ranges().inflight.is_empty() {
                assert!(t.elapsed() < Duration::from_secs(60), "jobs not done");
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.trigger();
        });
    }

    /// Each job's write is in flight while the next job is produced: every write but the last
    /// waits for the next fill to start, and fails after 10 s if it does not (a pool thread
    /// that writes before it produces the next job); all four jobs end written and present.
    #[test]
    fn a_jobs_write_is_in_flight_while_the_next_one_is_produced() {
        let (engine, object, started) = engine(4, false, true);
        drain(&engine, &object);
        assert_eq!(started.load(Ordering::SeqCst), 4);
        assert_eq!(object.present(), std::iter::once(0..4 * MIB).collect());
        assert_eq!(
            *object.sink().data.lock().unwrap(),
            engine.server().blob,
            "bytes written"
        );
        let st = engine.stats();
        assert_eq!((st.ahead_bytes, st.writes), (4 * MIB, 4), "{st}");
    }

    /// A write that fails fails its job: nothing of it is marked present, its claim is
    /// released (a READ fetches it again), and it counts as no byte filled ahead.
    #[test]
    fn a_failed_write_marks_nothing_present() {
        let (engine, object, started) = engine(3, true, false);
        drain(&engine, &object);
        assert_eq!(started.load(Ordering::SeqCst), 3, "every job produced");
        assert_eq!(object.sink().writes.load(Ordering::SeqCst), 3);
        assert!(object.present().is_empty(), "{:?}", object.present());
        assert!(object.lock_ranges().inflight.is_empty());
        let st = engine.stats();
        assert_eq!(
            (st.ahead_bytes, st.writes, st.bytes_written),
            (0, 0, 0),
            "{st}"
        );
    }
}
