//! The cachefiles transport's pure part: it turns each kernel [`Request`] into [`Action`]s
//! over the [`Engine`] (answer an OPEN, fill a READ window, complete a READ, forget an
//! object) and carries them out. A [`Session`] is the engine driven by cachefiles messages.
//!
//! [`Session::handle`] makes no syscall and calls the server only for OPEN. [`Session::execute`]
//! carries the actions out through the [`ObjectFd`] trait and a command sink, and
//! [`Session::serve_message`] does both for one raw message read from a [`Device`]; tests drive
//! all three with scripted messages and temporary files instead of the kernel
//! (`ondemand::testing`, feature `test-util`).
//!
//! Rules the session keeps:
//! - An object enters the table **before** its `copen` is written, so a READ that another
//!   worker reads right after the `copen` finds it. If the `copen` write fails it leaves again.
//! - A READ for a known object always ends with [`Action::ReadComplete`], whatever happened
//!   while filling: a READ that is never completed blocks its reader forever.
//! - A refused OPEN is answered with `copen <id>,-<errno>` and then its fd is closed.
//! - A READ window is the engine's ([`crate::engine::window`]): it starts at the request's
//!   block, spans the request (at most [`crate::MAX_READ_FILL`] of it) or the readahead size,
//!   whichever is longer, and stops at the object's size rounded up to a block; the tail past
//!   the object's end is zero-filled.
//! - A READ that continues the previous one's stream is followed, after its completion, by a
//!   fill ahead ([`Action::FillAhead`], [`Engine::with_sequential_ahead`]).

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use cachefiles_proto::msg::{CACHEFILES_OP_OPEN, MsgHeader};
use cachefiles_proto::{
    CloseRequest, Command, DecodeError, Errno, MsgId, ObjectId, OpenReply, OpenRequest,
    ReadRequest, Request,
};
use zerocopy::FromBytes;

use crate::buf::AlignedBuf;
use crate::device::{Device, ObjectFd};
use crate::engine::{Engine, Object, Refused};
use crate::server::{ObjectKey, OnDemandServer, errno_of};

/// The engine driven by cachefiles messages: its object ids are the kernel's, its sinks the
/// objects' anonymous fds (`F`: [`crate::AnonFd`] with the kernel, any [`ObjectFd`] in
/// tests). [`crate::Daemon`] infers `F` from its device.
pub type Session<S, F> = Engine<S, F>;

/// What to do for a request. Produced by [`Session::handle`], carried out by
/// [`Session::execute`].
pub enum Action<O, F> {
    /// Write `copen <msg_id>,<size or -errno>`.
    Copen {
        /// The OPEN's id.
        msg_id: MsgId,
        /// Size or errno.
        reply: OpenReply,
        /// The object this OPEN put into the table (on success): if the `copen` cannot be
        /// written, it is taken out again.
        inserted: Option<ObjectId>,
    },
    /// Close an fd the session does not keep (after a refused OPEN, once its `copen` is out).
    CloseFd(F),
    /// Produce `range` of the object (block-aligned) and write it through its fd.
    Fill {
        /// The object.
        object: Arc<Object<O, F>>,
        /// The window, block-aligned, within the object's size rounded up to a block.
        range: Range<u64>,
        /// End of what the kernel asked for (the rest of `range` is readahead).
        requested_end: u64,
    },
    /// After the READ is completed: fill `range` (block-aligned), which follows the window of
    /// a sequential reader, so its next reads find the bytes present (or in flight) instead of
    /// waiting for an upcall ([`crate::Engine::with_sequential_ahead`]).
    FillAhead {
        /// The object.
        object: Arc<Object<O, F>>,
        /// What to fill, where nothing is present or in flight.
        range: Range<u64>,
    },
    /// Complete the READ through the object's fd.
    ReadComplete {
        /// The object.
        object: Arc<Object<O, F>>,
        /// The READ's id.
        msg_id: MsgId,
    },
    /// The object left the table: tell the server, then drop it (its fd closes once in-flight
    /// fills end).
    Close(Arc<Object<O, F>>),
    /// Nothing can be done; log it.
    Ignore(&'static str),
}

impl<O, F> fmt::Debug for Action<O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Copen {
                msg_id,
                reply,
                inserted,
            } => f
                .debug_struct("Copen")
                .field("msg_id", msg_id)
                .field("reply", reply)
                .field("inserted", inserted)
                .finish(),
            Action::CloseFd(_) => f.write_str("CloseFd"),
            Action::Fill {
                object,
                range,
                requested_end,
            } => f
                .debug_struct("Fill")
                .field("object", &object.id())
                .field("range", range)
                .field("requested_end", requested_end)
                .finish(),
            Action::FillAhead { object, range } => f
                .debug_struct("FillAhead")
                .field("object", &object.id())
                .field("range", range)
                .finish(),
            Action::ReadComplete { object, msg_id } => f
                .debug_struct("ReadComplete")
                .field("object", &object.id())
                .field("msg_id", msg_id)
                .finish(),
            Action::Close(object) => f.debug_tuple("Close").field(&object.id()).finish(),
            Action::Ignore(why) => f.debug_tuple("Ignore").field(why).finish(),
        }
    }
}

impl<S: OnDemandServer, F> Engine<S, F> {
    /// Decide what to do for `request`. `fd` is the adopted fd of an OPEN (ignored, and
    /// dropped, for other requests). Calls the server's `open` for an OPEN; nothing else.
    pub fn handle(&self, request: &Request<'_>, fd: Option<F>) -> Vec<Action<S::Object, F>> {
        match request {
            Request::Open(open) => match fd {
                Some(fd) => self.handle_open(open, fd),
                None => {
                    self.stats.opens.add(1);
                    self.stats.open_errors.add(1);
                    vec![Action::Copen {
                        msg_id: open.msg_id,
                        reply: OpenReply::Error(Errno::EIO),
                        inserted: None,
                    }]
                }
            },
            Request::Read(read) => self.handle_read(read),
            Request::Close(close) => self.handle_close(close),
        }
    }

    fn handle_open(&self, open: &OpenRequest<'_>, fd: F) -> Vec<Action<S::Object, F>> {
        self.stats.opens.add(1);
        let key = ObjectKey {
            volume_key: open.volume_key,
            cookie_key: open.cookie_key,
        };
        let refuse = |errno: Errno, fd: F| {
            self.stats.open_errors.add(1);
            vec![
                Action::Copen {
                    msg_id: open.msg_id,
                    reply: OpenReply::Error(errno),
                    inserted: None,
                },
                Action::CloseFd(fd),
            ]
        };
        if self.contains(open.object_id) {
            log::error!(
                "OPEN object {} ({key}): object id already open; refusing with EEXIST",
                open.object_id
            );
            return refuse(Errno::new(nix::libc::EEXIST).unwrap_or(Errno::EIO), fd);
        }
        let opened = match self.server().open(&key) {
            Ok(opened) => opened,
            Err(e) => {
                let errno = errno_of(&e);
                log::warn!(
                    "OPEN object {} ({key}): refused with errno {}: {e}",
                    open.object_id,
                    errno.get()
                );
                return refuse(errno, fd);
            }
        };
        let size = opened.size;
        // Checked again under the table's lock: another worker may have raced us to this id.
        match self.open_object(open.object_id, open.volume_key, open.cookie_key, opened, fd) {
            Ok(object) => vec![Action::Copen {
                msg_id: open.msg_id,
                reply: OpenReply::Size(size),
                inserted: Some(object.id()),
            }],
            Err(Refused { errno, sink }) => refuse(errno, sink),
        }
    }

    fn handle_read(&self, read: &ReadRequest) -> Vec<Action<S::Object, F>> {
        let Some(object) = self.object(read.object_id) else {
            self.stats.reads.add(1);
            self.stats.requested_bytes.add(read.len);
            self.stats.read_errors.add(1);
            log::error!(
                "READ msg {} for unknown object {}: no fd to complete it with",
                read.msg_id,
                read.object_id
            );
            return vec![Action::Ignore("READ for an unknown object")];
        };
        let plan = self.plan_read(&object, read.off, read.len);
        let mut actions = Vec::with_capacity(3);
        if let Some((range, requested_end)) = plan.window {
            log::debug!(
                "READ msg {} object {} [{}, +{}): filling {:?}",
                read.msg_id,
                object.id(),
                read.off,
                read.len,
                range
            );
            actions.push(Action::Fill {
                object: Arc::clone(&object),
                range,
                requested_end,
            });
        }
        actions.push(Action::ReadComplete {
            object: Arc::clone(&object),
            msg_id: read.msg_id,
        });
        if let Some(range) = plan.ahead {
            actions.push(Action::FillAhead { object, range });
        }
        actions
    }

    fn handle_close(&self, close: &CloseRequest) -> Vec<Action<S::Object, F>> {
        self.stats.closes.add(1);
        match self.forget(close.object_id) {
            Some(object) => {
                log::info!("CLOSE object {} ({})", object.id(), object.key());
                vec![Action::Close(object)]
            }
            None => {
                log::warn!("CLOSE for unknown object {}", close.object_id);
                vec![Action::Ignore("CLOSE for an unknown object")]
            }
        }
    }
}

impl<S: OnDemandServer, F: ObjectFd> Engine<S, F> {
    /// Carry out `actions`: commands go to `send`, fills use `buf` (any size: a fill is
    /// written in pieces of `buf`'s length; [`crate::Daemon`] uses the readahead window).
    /// Errors are logged and counted, never returned: the daemon keeps serving.
    pub fn execute(
        &self,
        actions: Vec<Action<S::Object, F>>,
        send: &dyn Fn(&Command<'_>) -> io::Result<()>,
        buf: &mut AlignedBuf,
    ) {
        // Readahead claimed by READs, filled once their actions (the cread) are done.
        let mut later = Vec::new();
        // Fills ahead of sequential readers, after that.
        let mut aheads = Vec::new();
        let mut actions = actions.into_iter().peekable();
        while let Some(action) = actions.next() {
            match action {
                Action::Copen {
                    msg_id,
                    reply,
                    inserted,
                } => match send(&Command::Copen { msg_id, reply }) {
                    Err(e) => {
                        log::error!("copen {msg_id} failed: {e}");
                        if let Some(id) = inserted {
                            // The object went into the table before the copen; take it out.
                            self.stats.open_errors.add(1);
                            drop(self.forget(id));
                        }
                    }
                    Ok(()) => {
                        // Writes are allowed once the copen is in: start prefetching.
                        if let Some(object) = inserted.and_then(|id| self.object(id)) {
                            self.object_ready(&object);
                        }
                    }
                },
                Action::CloseFd(fd) => drop(fd),
                Action::Fill {
                    object,
                    range,
                    requested_end,
                } => {
                    // The READ this window is for: completed as soon as its requested part
                    // is written, if the server streams and the rest is still coming.
                    let msg_id = match actions.peek() {
                        Some(Action::ReadComplete { object: o, msg_id })
                            if Arc::ptr_eq(o, &object) =>
                        {
                            Some(*msg_id)
                        }
                        _ => None,
                    };
                    let mut answered = false;
                    let mut answer = || {
                        if let Some(msg_id) = msg_id {
                            Self::complete(&object, msg_id);
                            answered = true;
                        }
                    };
                    let hook: Option<crate::engine::Answer<'_>> =
                        msg_id.is_some().then_some(&mut answer);
                    // Errors are counted and logged; the READ is completed either way (the
                    // predictor's pieces are queued by the fill).
                    let _ = self.fill_window_answering(
                        &object,
                        range,
                        requested_end,
                        buf,
                        &mut later,
                        hook,
                    );
                    if answered {
                        // Its ReadComplete: done.
                        actions.next();
                    }
                }
                Action::FillAhead { object, range } => aheads.push((object, range)),
                Action::ReadComplete { object, msg_id } => Self::complete(&object, msg_id),
                Action::Close(object) => {
                    self.server().close(object.state());
                    drop(object);
                }
                Action::Ignore(_) => {}
            }
        }
        self.fill_later(later, buf);
        for (object, range) in aheads {
            self.fill_ahead(&object, range, buf);
        }
        self.help_queued(buf);
    }

    /// Complete READ `msg_id` through the object's fd.
    fn complete(object: &Object<S::Object, F>, msg_id: MsgId) {
        match object.sink().read_complete(msg_id) {
            Ok(()) => log::debug!("object {}: READ_COMPLETE {msg_id}", object.id()),
            // EINVAL: the READ was cancelled (CLOSE, killed reader). Harmless.
            Err(e) => log::debug!("object {}: READ_COMPLETE {msg_id}: {e}", object.id()),
        }
    }

    /// Decode one message read from `device`, adopt the fd of an OPEN, decide and act.
    /// Errors are logged and counted; the daemon keeps serving.
    pub fn serve_message<D: Device<Fd = F>>(&self, device: &D, msg: &[u8], buf: &mut AlignedBuf) {
        let request = match Request::decode(msg) {
            Ok(r) => r,
            Err(e) => {
                self.stats.bad_messages.add(1);
                self.refuse_undecodable(device, msg, e);
                return;
            }
        };
        if let Request::Open(open) = &request {
            // Its arrival, apart from the "OPEN object" line logged once it is answered.
            log::debug!("OPEN msg {} object {} read", open.msg_id, open.object_id);
        }
        let fd = match &request {
            Request::Open(open) => match device.adopt(open.fd) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::error!(
                        "OPEN object {}: cannot adopt fd {}: {e}",
                        open.object_id,
                        open.fd
                    );
                    None
                }
            },
            _ => None,
        };
        let started = Instant::now();
        let actions = self.handle(&request, fd);
        self.execute(actions, &|cmd| device.send(cmd), buf);
        match request {
            Request::Open(_) => self.stats.open_latency.observe(started.elapsed()),
            Request::Read(_) => self.stats.read_latency.observe(started.elapsed()),
            Request::Close(_) => {}
        }
    }

    /// A message that did not decode. An OPEN must still be answered, or its mount hangs:
    /// answer it with `-EINVAL` (its fd is left alone: the message is not trusted).
    fn refuse_undecodable<D: Device<Fd = F>>(&self, device: &D, msg: &[u8], e: DecodeError) {
        log::error!("undecodable message ({} bytes): {e}", msg.len());
        if let Ok((header, _)) = MsgHeader::read_from_prefix(msg)
            && header.opcode == CACHEFILES_OP_OPEN
        {
            let cmd = Command::Copen {
                msg_id: MsgId(header.msg_id),
                reply: OpenReply::Error(Errno::EINVAL),
            };
            if let Err(e) = device.send(&cmd) {
                log::error!("{cmd} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use cachefiles_proto::msg::{CACHEFILES_OP_OPEN, MsgHeader, OpenPayload};
    use zerocopy::IntoBytes;

    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::engine::{DEFAULT_READAHEAD, Sink};
    use crate::local::LocalDirServer;
    use crate::metrics::StatsSnapshot;
    use crate::server::Opened;
    use crate::testing::{FakeDevice, FakeFd};

    const BLOB_LEN: usize = 3 * 1024 * 1024 + 1000;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    struct Env {
        _tmp: tempfile::TempDir,
        device: FakeDevice,
        session: Session<LocalDirServer, FakeFd>,
        buf: AlignedBuf,
        blob: Vec<u8>,
    }

    fn env(readahead: u64) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = tmp.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let blob = pattern(BLOB_LEN);
        std::fs::write(blobs.join("boot"), &blob).unwrap();
        std::fs::write(blobs.join("empty"), b"").unwrap();
        let device = FakeDevice::new(tmp.path());
        let session = Session::new(LocalDirServer::new(blobs)).with_readahead(readahead);
        Env {
            _tmp: tmp,
            device,
            session,
            buf: AlignedBuf::new(256 << 10),
            blob,
        }
    }

    impl Env {
        fn send(&mut self, request: Request<'_>) {
            let mut msg = [0u8; 1024];
            let n = request.encode(&mut msg).unwrap();
            self.session
                .serve_message(&self.device, &msg[..n], &mut self.buf);
        }

        fn open(&mut self, msg_id: u32, object_id: u32, key: &[u8], fd: u32) {
            self.send(Request::Open(OpenRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
                volume_key: b"erofs,boot",
                cookie_key: key,
                fd,
                flags: 0,
            }));
        }

        fn read(&mut self, msg_id: u32, object_id: u32, off: u64, len: u64) {
            self.send(Request::Read(ReadRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
                off,
                len,
            }));
        }

        fn close(&mut self, msg_id: u32, object_id: u32) {
            self.send(Request::Close(CloseRequest {
                msg_id: MsgId(msg_id),
                object_id: ObjectId(object_id),
            }));
        }

        fn cache(&self, fd: u32) -> Vec<u8> {
            std::fs::read(self.device.cache_file(fd)).unwrap()
        }
    }

    #[test]
    fn open_read_close() {
        let mut e = env(0);
        e.open(10, 1, b"boot", 7);
        assert_eq!(e.device.commands(), [format!("copen 10,{BLOB_LEN}")]);
        assert_eq!(e.session.object_count(), 1);

        // Readahead off: exactly the requested blocks.
        e.read(11, 1, 8192, 4096);
        let log = e.device.fd_log(7);
        assert_eq!(*log.writes.lock().unwrap(), [(8192, 4096)]);
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(11)]);
        assert_eq!(&e.cache(7)[8192..12288], &e.blob[8192..12288]);

        // The last, partial block is zero-padded to a whole block.
        let last = (BLOB_LEN / 4096 * 4096) as u64;
        e.read(12, 1, last, 4096);
        let cache = e.cache(7);
        assert_eq!(cache.len(), BLOB_LEN.div_ceil(4096) * 4096);
        assert_eq!(&cache[last as usize..BLOB_LEN], &e.blob[last as usize..]);
        assert!(cache[BLOB_LEN..].iter().all(|&b| b == 0));

        e.close(13, 1);
        assert_eq!(e.session.object_count(), 0);
        assert!(log.closed.load(Ordering::SeqCst), "CLOSE closes the fd");
        assert_eq!(
            e.session.stats(),
            StatsSnapshot {
                opens: 1,
                reads: 2,
                closes: 1,
                writes: 2,
                bytes_written: 8192,
                requested_bytes: 8192,
                // The last block holds the blob's last 1000 bytes.
                fetched_bytes: 4096 + 1000,
                ..Default::default()
            }
        );
    }

    #[test]
    fn readahead_fills_a_window_in_chunks() {
        let mut e = env(DEFAULT_READAHEAD);
        e.open(1, 3, b"boot", 5);
        e.read(2, 3, 0, 4096);
        let log = e.device.fd_log(5);
        // 1 MiB window, written through a 256 KiB buffer.
        let w = 256 << 10;
        assert_eq!(
            *log.writes.lock().unwrap(),
            [(0, w), (w as u64, w), (2 * w as u64, w), (3 * w as u64, w)]
        );
        assert_eq!(&e.cache(5)[..1 << 20], &e.blob[..1 << 20]);
        // A cold sequential read of the whole blob takes one READ per MiB.
        let mut off = 1 << 20;
        let mut id = 3;
        while off < BLOB_LEN as u64 {
            e.read(id, 3, off, 4096);
            id += 1;
            off += 1 << 20;
        }
        let cache = e.cache(5);
        assert_eq!(&cache[..BLOB_LEN], &e.blob[..]);
        assert_eq!(e.session.stats().reads, BLOB_LEN.div_ceil(1 << 20) as u64);
        assert_eq!(log.completed.lock().unwrap().len(), 4);
    }

    /// Records writes and completions in one sequence.
    #[derive(Default)]
    struct Events(Mutex<Vec<(char, u64)>>);

    impl Sink for Events {
        fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(('w', off));
            assert_eq!(data.len() % 4096, 0);
            Ok(())
        }
    }

    impl ObjectFd for Events {
        fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
            self.0.lock().unwrap().push(('c', u64::from(msg_id.0)));
            Ok(())
        }
    }

    /// Handle and execute `req` on `s` as a worker would (commands dropped, a fresh buffer).
    fn run<S: OnDemandServer>(s: &Session<S, Events>, req: &Request<'_>, fd: Option<Events>) {
        let send = |_: &Command<'_>| Ok(());
        s.execute(s.handle(req, fd), &send, &mut AlignedBuf::new(1 << 20));
    }

    /// Open the blob "boot" as object 1, its writes and completions recorded in [`Events`].
    fn open_boot<S: OnDemandServer>(s: &Session<S, Events>) {
        let open = Request::Open(OpenRequest {
            msg_id: MsgId(1),
            object_id: ObjectId(1),
            volume_key: b"erofs,boot",
            cookie_key: b"boot",
            fd: 3,
            flags: 0,
        });
        run(s, &open, Some(Events::default()));
    }

    /// A READ of object 1.
    fn read_boot(msg_id: u32, off: u64, len: u64) -> Request<'static> {
        Request::Read(ReadRequest {
            msg_id: MsgId(msg_id),
            object_id: ObjectId(1),
            off,
            len,
        })
    }

    #[test]
    fn async_readahead_completes_before_filling_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("boot"), pattern(BLOB_LEN)).unwrap();
        let run = |async_readahead| {
            let s = Session::<LocalDirServer, Events>::new(LocalDirServer::new(tmp.path()))
                .with_readahead(1 << 20)
                .with_async_readahead(async_readahead);
            open_boot(&s);
            run(&s, &read_boot(2, 8192, 4096), None);
            let object = s.object(ObjectId(1)).unwrap();
            let events = object.sink().0.lock().unwrap().clone();
            (events, object.present(), s.stats().fetched_bytes)
        };
        // Synchronous: the whole window in one fill (it fits the 1 MiB buffer, wherever it
        // starts: one batch of requests to a remote store), then the completion.
        let (events, present, fetched) = run(false);
        assert_eq!(events, [('w', 8192), ('c', 2)]);
        assert_eq!(present.ranges().len(), 1);
        assert_eq!(present.ranges()[0], 8192..8192 + (1 << 20));
        // Asynchronous: the requested block, the completion, then the window in 256 KiB chunks
        // (cut at multiples of 256 KiB).
        let (events, present2, fetched2) = run(true);
        assert_eq!(
            events,
            [
                ('w', 8192),
                ('c', 2),
                ('w', 12288),
                ('w', 256 << 10),
                ('w', 512 << 10),
                ('w', 768 << 10),
                ('w', 1 << 20),
            ]
        );
        assert_eq!(present2, present);
        assert_eq!(fetched2, fetched);
    }

    /// A directory server that streams: fills in 64 KiB steps, reporting each prefix; with a
    /// gate, each fill stops after its first step until the test lets it go on.
    struct Streaming {
        inner: LocalDirServer,
        gate: Option<Mutex<std::sync::mpsc::Receiver<()>>>,
    }

    impl OnDemandServer for Streaming {
        type Object = <LocalDirServer as OnDemandServer>::Object;
        fn open(&self, key: &ObjectKey<'_>) -> io::Result<crate::Opened<Self::Object>> {
            self.inner.open(key)
        }
        fn read_at(&self, object: &Self::Object, off: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read_at(object, off, buf)
        }
        fn fill_streaming(
            &self,
            object: &Self::Object,
            off: u64,
            buf: &mut [u8],
            ready: &mut (dyn FnMut(&[u8]) + Send),
        ) -> io::Result<()> {
            let mut done = 0;
            while done < buf.len() {
                let n = (buf.len() - done).min(64 << 10);
                self.inner
                    .fill(object, off + done as u64, &mut buf[done..done + n])?;
                done += n;
                ready(&buf[..done]);
                if done == n
                    && let Some(gate) = &self.gate
                {
                    // Err once the test dropped its sender: never blocks for good.
                    let _ = gate.lock().unwrap().recv();
                }
            }
            Ok(())
        }
    }

    #[test]
    fn a_streaming_fill_completes_the_read_once_its_part_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("boot"), pattern(BLOB_LEN)).unwrap();
        let s = Session::<Streaming, Events>::new(Streaming {
            inner: LocalDirServer::new(tmp.path()),
            gate: None,
        })
        .with_readahead(1 << 20);
        open_boot(&s);
        // 100 KiB asked at 8 KiB: written and answered once the second 64 KiB step is in,
        // then the rest of the window is written by the same fill in steps of 256 KiB (the
        // last one when the fill ends), and the READ is not completed again.
        run(&s, &read_boot(2, 8192, 100 << 10), None);
        let object = s.object(ObjectId(1)).unwrap();
        let events = object.sink().0.lock().unwrap().clone();
        let step = 64 << 10;
        let mut want = vec![('w', 8192), ('c', 2)];
        want.extend([2, 6, 10, 14].map(|i| ('w', 8192 + i * step)));
        assert_eq!(events, want);
        assert_eq!(object.present().ranges().len(), 1);
        assert_eq!(object.present().ranges()[0], 8192..8192 + (1 << 20));
        assert_eq!(s.stats().fetched_bytes, 1 << 20);
    }

    /// A READ that lands in the rest of a window answered early, while that rest is still
    /// being fetched, waits for it: it fetches nothing itself (no refetch, and no readahead
    /// of its own past the window) and is answered once its part is written.
    #[test]
    fn a_read_in_the_rest_of_a_window_answered_early_waits_for_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("boot"), pattern(BLOB_LEN)).unwrap();
        let (go, gate) = std::sync::mpsc::channel();
        let server = Streaming {
            inner: LocalDirServer::new(tmp.path()),
            gate: Some(Mutex::new(gate)),
        };
        let s = Session::<Streaming, Events>::new(server).with_readahead(1 << 20);
        open_boot(&s);
        let object = s.object(ObjectId(1)).unwrap();
        let events = || object.sink().0.lock().unwrap().clone();
        std::thread::scope(|scope| {
            let first = scope.spawn(|| run(&s, &read_boot(2, 0, 4096), None));
            // READ 2 is answered after the first step; its window's rest is still to come.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !events().contains(&('c', 2)) {
                assert!(
                    Instant::now() < deadline,
                    "READ 2 never answered: {:?}",
                    events()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(events(), [('w', 0), ('c', 2)]);
            // READ 3 lands in that rest (512 KiB in): it must wait for the fill in flight.
            let second = scope.spawn(|| run(&s, &read_boot(3, 512 << 10, 4096), None));
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !events().contains(&('c', 3)),
                "answered before its bytes: {:?}",
                events()
            );
            go.send(()).unwrap();
            drop(go);
            first.join().unwrap();
            second.join().unwrap();
        });
        let ev = events();
        let answered = ev
            .iter()
            .position(|e| *e == ('c', 3))
            .expect("READ 3 answered");
        // The fill writes its window in order, each write up to the next one's start: the
        // write holding [512 KiB, +4 KiB) is the last one starting at or before 512 KiB, and
        // it came before the answer.
        let covering = ev
            .iter()
            .rposition(|&(k, off)| k == 'w' && off <= 512 << 10)
            .expect("a write at or before 512 KiB");
        assert!(covering < answered, "{ev:?}");
        assert!(
            ev.iter().any(|&(k, off)| k == 'w' && off > 512 << 10),
            "{ev:?}"
        );
        let present = object.present();
        assert_eq!(present.ranges().len(), 1);
        assert_eq!(present.ranges()[0], 0..1 << 20);
        assert_eq!(s.stats().fetched_bytes, 1 << 20);
    }

    #[test]
    fn sequential_reads_are_filled_ahead() {
        let mut e = env(1 << 20);
        e.open(1, 3, b"boot", 5);
        // The first READ of an object starts no stream: its window only.
        e.read(2, 3, 0, 4096);
        assert_eq!(e.session.stats().ahead_bytes, 0);
        assert_eq!(
            e.session.object(ObjectId(3)).unwrap().present().len(),
            1 << 20
        );
        // The next READ starts where that window ended: its window, its completion, then
        // one more window ahead.
        e.read(3, 3, 1 << 20, 4096);
        let log = e.device.fd_log(5);
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(2), MsgId(3)]);
        let st = e.session.stats();
        assert_eq!(st.ahead_bytes, 1 << 20);
        assert_eq!(st.fetched_bytes, 3 << 20);
        assert_eq!(&e.cache(5)[..3 << 20], &e.blob[..3 << 20]);
        // The stream goes on at the end of what was filled ahead: the rest of the blob.
        e.read(4, 3, 3 << 20, 4096);
        assert_eq!(&e.cache(5)[..BLOB_LEN], &e.blob[..]);
        let st = e.session.stats();
        assert_eq!(
            (st.reads, st.ahead_bytes, st.fetched_bytes),
            (3, 1 << 20, BLOB_LEN as u64)
        );
    }

    #[test]
    fn random_reads_are_not_filled_ahead() {
        let mut e = env(256 << 10);
        e.open(1, 3, b"boot", 5);
        for (id, off) in [
            (2, 2 << 20),
            (3, 0),
            (4, 1 << 20),
            (5, 3 << 20),
            (6, 512 << 10),
        ] {
            e.read(id, 3, off, 4096);
        }
        let st = e.session.stats();
        assert_eq!(st.ahead_bytes, 0);
        assert_eq!(
            st.fetched_bytes,
            4 * (256 << 10) + (BLOB_LEN as u64 - (3 << 20))
        );
    }

    #[test]
    fn read_and_close_for_unknown_objects() {
        let mut e = env(0);
        e.read(1, 42, 0, 4096);
        e.close(2, 42);
        assert!(e.device.commands().is_empty());
        let s = e.session.stats();
        assert_eq!((s.reads, s.read_errors, s.closes, s.writes), (1, 1, 1, 0));
        // The session goes on serving.
        e.open(3, 1, b"boot", 4);
        assert_eq!(e.device.commands(), [format!("copen 3,{BLOB_LEN}")]);
    }

    #[test]
    fn objects_are_found_by_volume_and_cookie() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.send(Request::Open(OpenRequest {
            msg_id: MsgId(2),
            object_id: ObjectId(2),
            volume_key: b"erofs,dom",
            cookie_key: b"boot",
            fd: 5,
            flags: 0,
        }));
        let a = e.session.find(b"erofs,boot", b"boot").unwrap();
        let b = e.session.find(b"erofs,dom", b"boot").unwrap();
        assert_eq!((a.id(), b.id()), (ObjectId(1), ObjectId(2)));
        assert_eq!(b.volume_key(), b"erofs,dom");
        assert!(e.session.find(b"erofs,dom", b"other").is_none());
        e.close(3, 2);
        assert!(e.session.find(b"erofs,dom", b"boot").is_none());
        assert!(
            b.is_closed(),
            "a closed object says so to whoever still holds it"
        );
    }

    #[test]
    fn duplicate_object_ids_are_refused() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.open(2, 1, b"boot", 5);
        assert_eq!(
            e.device.commands(),
            [format!("copen 1,{BLOB_LEN}"), "copen 2,-17".into()]
        );
        assert!(
            e.device.fd_log(5).closed.load(Ordering::SeqCst),
            "the new fd is closed"
        );
        assert!(
            !e.device.fd_log(4).closed.load(Ordering::SeqCst),
            "the old one is kept"
        );
        e.read(3, 1, 0, 4096);
        assert_eq!(*e.device.fd_log(4).completed.lock().unwrap(), [MsgId(3)]);
    }

    #[test]
    fn failing_opens_become_errnos() {
        let mut e = env(0);
        e.open(1, 1, b"missing", 4);
        e.open(2, 2, b"../etc", 5);
        e.open(3, 3, b"", 6);
        e.open(4, 4, b"empty", 7);
        assert_eq!(
            e.device.commands(),
            ["copen 1,-2", "copen 2,-22", "copen 3,-22", "copen 4,0"]
        );
        for fd in [4, 5, 6] {
            assert!(
                e.device.fd_log(fd).closed.load(Ordering::SeqCst),
                "fd {fd} closed"
            );
        }
        assert_eq!(e.session.stats().open_errors, 3);
        // An empty object: a READ writes nothing but is completed.
        e.read(5, 4, 0, 4096);
        let log = e.device.fd_log(7);
        assert!(log.writes.lock().unwrap().is_empty());
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(5)]);
    }

    /// A server whose reads fail.
    struct Broken;

    impl OnDemandServer for Broken {
        type Object = ();
        fn open(&self, _: &ObjectKey<'_>) -> io::Result<Opened<()>> {
            Ok(Opened {
                object: (),
                size: 1 << 20,
            })
        }
        fn read_at(&self, _: &(), _: u64, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("backend down"))
        }
    }

    #[test]
    fn failing_reads_are_still_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let device = FakeDevice::new(tmp.path());
        let session = Session::<Broken, FakeFd>::new(Broken);
        let mut buf = AlignedBuf::new(4096);
        let mut msg = [0u8; 1024];
        for req in [
            Request::Open(OpenRequest {
                msg_id: MsgId(1),
                object_id: ObjectId(1),
                volume_key: b"v",
                cookie_key: b"c",
                fd: 3,
                flags: 0,
            }),
            Request::Read(ReadRequest {
                msg_id: MsgId(2),
                object_id: ObjectId(1),
                off: 0,
                len: 4096,
            }),
        ] {
            let n = req.encode(&mut msg).unwrap();
            session.serve_message(&device, &msg[..n], &mut buf);
        }
        let log = device.fd_log(3);
        assert!(log.writes.lock().unwrap().is_empty());
        assert_eq!(*log.completed.lock().unwrap(), [MsgId(2)]);
        assert_eq!(session.stats().read_errors, 1);
    }

    #[test]
    fn failing_writes_are_still_completed() {
        let mut e = env(0);
        e.open(1, 1, b"boot", 4);
        e.device.fd_log(4).fail_writes.store(true, Ordering::SeqCst);
        e.read(2, 1, 0, 4096);
        assert_eq!(*e.device.fd_log(4).completed.lock().unwrap(), [MsgId(2)]);
        assert_eq!(e.session.stats().read_errors, 1);
    }

    #[test]
    fn a_failed_copen_forgets_the_object() {
        let mut e = env(0);
        e.device.fail_copen.store(true, Ordering::SeqCst);
        e.open(1, 1, b"boot", 4);
        assert_eq!(e.session.object_count(), 0);
        assert!(e.device.fd_log(4).closed.load(Ordering::SeqCst));
        assert_eq!(e.session.stats().open_errors, 1);
    }

    #[test]
    fn undecodable_messages_are_counted_and_opens_refused() {
        let mut e = env(0);
        // An OPEN whose volume key is not NUL-terminated.
        let mut msg = Vec::new();
        msg.extend_from_slice(
            MsgHeader {
                msg_id: 9,
                opcode: CACHEFILES_OP_OPEN,
                len: 34,
                object_id: 1,
            }
            .as_bytes(),
        );
        msg.extend_from_slice(
            OpenPayload {
                volume_key_size: 1,
                cookie_key_size: 1,
                fd: 3,
                flags: 0,
            }
            .as_bytes(),
        );
        msg.extend_from_slice(b"xy");
        e.session.serve_message(&e.device, &msg, &mut e.buf);
        // Garbage.
        e.session.serve_message(&e.device, &[1, 2, 3], &mut e.buf);
        assert_eq!(e.device.commands(), ["copen 9,-22"]);
        assert_eq!(e.session.stats().bad_messages, 2);
        assert!(
            e.device.fds.lock().unwrap().is_empty(),
            "no fd adopted from a bad message"
        );
    }
}
