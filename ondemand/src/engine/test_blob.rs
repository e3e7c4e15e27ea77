//! The in-memory server the engine's unit tests fill from: one blob, a delay per call, and a
//! log of which thread produced which bytes; and the kernel's OPEN and READ of it, as a
//! session's tests send them.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use cachefiles_proto::{Command, MsgId, ObjectId, OpenRequest, ReadRequest, Request};

use crate::blob_store::RangeRead;
use crate::buf::AlignedBuf;
use crate::server::{ObjectKey, OnDemandServer, Opened};
use crate::session::Session;
use crate::testing::FakeFd;

/// `len` bytes of a pattern that tells misplaced blocks apart.
pub(crate) fn blob(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Serves [`blob`]`(len)` from memory, `delay` per call, recording who produced which bytes.
pub(crate) struct SlowBlob {
    pub(crate) blob: Vec<u8>,
    delay: Duration,
    fills: Mutex<Vec<(ThreadId, Range<u64>)>>,
    batches: Mutex<Vec<usize>>,
    started: Arc<AtomicUsize>,
}

impl SlowBlob {
    pub(crate) fn new(len: usize, delay: Duration) -> Self {
        SlowBlob {
            blob: blob(len),
            delay,
            fills: Mutex::new(Vec::new()),
            batches: Mutex::new(Vec::new()),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Every call's thread and range, in call order.
    pub(crate) fn fills(&self) -> Vec<(ThreadId, Range<u64>)> {
        self.fills.lock().unwrap().clone()
    }

    /// The number of ranges of each [`OnDemandServer::fill_ranges`] call, in call order.
    pub(crate) fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }

    /// How many calls have started (counted as each one begins, before its delay).
    pub(crate) fn started(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.started)
    }

    /// The bytes produced by all calls.
    pub(crate) fn produced(&self) -> u64 {
        self.fills().iter().map(|(_, r)| r.end - r.start).sum()
    }
}

impl OnDemandServer for SlowBlob {
    type Object = ();
    fn open(&self, _: &ObjectKey<'_>) -> io::Result<Opened<()>> {
        Ok(Opened {
            object: (),
            size: self.blob.len() as u64,
        })
    }
    fn read_at(&self, _: &(), off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        let start = off as usize;
        let n = buf.len().min(self.blob.len().saturating_sub(start));
        buf[..n].copy_from_slice(&self.blob[start..start + n]);
        self.fills
            .lock()
            .unwrap()
            .push((std::thread::current().id(), off..off + n as u64));
        Ok(n)
    }

    fn fill_ranges(&self, object: &(), ranges: &mut [RangeRead<'_>]) -> io::Result<()> {
        self.batches.lock().unwrap().push(ranges.len());
        ranges
            .iter_mut()
            .try_for_each(|r| self.fill(object, r.offset, r.buf))
    }
}

/// The kernel's OPEN of object 1 (cookie key `blob`) on `fd`, handled and executed.
pub(crate) fn open_blob(s: &Session<SlowBlob, FakeFd>, fd: FakeFd) {
    let open = Request::Open(OpenRequest {
        msg_id: MsgId(1),
        object_id: ObjectId(1),
        volume_key: b"erofs,img",
        cookie_key: b"blob",
        fd: 3,
        flags: 0,
    });
    let actions = s.handle(&open, Some(fd));
    s.execute(
        actions,
        &|_: &Command<'_>| Ok(()),
        &mut AlignedBuf::new(4096),
    );
}

/// A READ of object 1 as the kernel sends it, handled and executed (window, completion,
/// fill ahead) with a 1 MiB fill buffer.
pub(crate) fn read_blob(s: &Session<SlowBlob, FakeFd>, msg: u32, off: u64, len: u64) {
    let req = Request::Read(ReadRequest {
        msg_id: MsgId(msg),
        object_id: ObjectId(1),
        off,
        len,
    });
    let actions = s.handle(&req, None);
    s.execute(
        actions,
        &|_: &Command<'_>| Ok(()),
        &mut AlignedBuf::new(1 << 20),
    );
}
