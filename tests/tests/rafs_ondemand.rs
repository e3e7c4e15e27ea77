//! `ondemand::rafs::RafsDirServer` on images built by nydus-image, without a kernel: the
//! bytes it serves for the fsid and the blob-id cookie keys are exactly what the kernel's
//! EROFS needs (the reader, given those bytes as its devices, reads the whole tree back), the
//! sizes it reports are the device slots', blobs are found even when opened before their
//! bootstrap, and a damaged chunk fails the read when digests are checked.

use std::io;
use std::path::{Path, PathBuf};

use erofs_reader::{Image, ImageBuilder};
use ondemand::rafs::{RafsDirServer, RafsObject};
use ondemand::{ObjectKey, OnDemandServer};
use tests::tree::{self, Compare, TreeOptions};

fn key(cookie: &[u8]) -> ObjectKey<'_> {
    ObjectKey {
        volume_key: b"erofs,test",
        cookie_key: cookie,
    }
}

/// Every byte of an object, read through the server in 128 KiB steps.
fn read_object(server: &RafsDirServer, cookie: &[u8]) -> Vec<u8> {
    let opened = server.open(&key(cookie)).expect("open");
    let mut out = vec![0u8; opened.size as usize];
    for (i, piece) in out.chunks_mut(128 * 1024).enumerate() {
        server
            .fill(&opened.object, (i * 128 * 1024) as u64, piece)
            .expect("fill");
    }
    server.close(&opened.object);
    out
}

fn build(dir: &Path, name: &str, args: &[&str]) -> Option<std::path::PathBuf> {
    let boot = dir.join("blobs").join(name);
    build_with(dir, name, Some(&boot), args)
}

/// Build `src-NAME` into `DIR/blobs`, the bootstrap at `boot` (none: `--blob-inline-meta`).
fn build_with(
    dir: &Path,
    name: &str,
    boot: Option<&Path>,
    args: &[&str],
) -> Option<std::path::PathBuf> {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    tree::build_tree(
        &src,
        &TreeOptions {
            socket: false,
            devices: false,
            acls: false,
            ..TreeOptions::default()
        },
    );
    std::fs::write(src.join("big.bin"), tests::vm::noise(3, 3_000_000)).unwrap();
    let mut create = tests::nydus_image::Create::new(&src, &dir.join("blobs")).args(args);
    if let Some(b) = boot {
        create = create.bootstrap(b);
    }
    create.run()?;
    Some(src)
}

#[test]
fn serves_bootstrap_and_uncompressed_blobs() {
    let dir = tests::scratch_dir("rafs_ondemand/serve");
    let Some(src) = build(
        &dir,
        "img",
        &["--compressor", "zstd", "--chunk-size", "0x10000"],
    ) else {
        return;
    };
    let blobs = dir.join("blobs");
    std::fs::write(blobs.join("plain-file"), b"just bytes").unwrap();
    let server = RafsDirServer::new(&blobs).with_verify_digests(true);

    // The bootstrap is served as it is.
    let boot = read_object(&server, b"img");
    assert_eq!(boot, std::fs::read(blobs.join("img")).unwrap());
    let image = Image::from_source(boot.clone()).unwrap();
    assert_eq!(image.devices().len(), 1);
    let dev = &image.devices()[0];
    let id = dev.tag.clone();

    // The blob: the device's size, not the stored file's.
    let opened = server.open(&key(&id)).unwrap();
    assert!(matches!(opened.object, RafsObject::Blob(_)));
    assert_eq!(opened.size, dev.blocks * 4096);
    assert_ne!(
        opened.size,
        std::fs::metadata(blobs.join(String::from_utf8(id.clone()).unwrap()))
            .unwrap()
            .len()
    );
    let space = read_object(&server, &id);

    // The reader over exactly these bytes (as the kernel would have them) reads the tree.
    let image = ImageBuilder::new(boot).device(space).build().unwrap();
    let mut want = tree::snapshot_dir(&src);
    let mut got = tree::snapshot_image(&image);
    tree::fill_link_groups(&mut want);
    tree::fill_link_groups(&mut got);
    let how = Compare {
        root_metadata: false,
        ..Compare::default()
    };
    tree::compare(&want, &got, &how).unwrap_or_else(|d| panic!("{d}"));

    let totals = server.totals();
    assert_eq!(totals.blobs, 1);
    assert!(totals.stats.chunks_decoded > 0);
    assert_eq!(totals.stats.chunks_verified, totals.stats.chunks_decoded);
    assert!(totals.stats.stored_bytes < totals.stats.bytes_served);
    println!("{totals}");

    // Anything else is a plain file.
    assert_eq!(read_object(&server, b"plain-file"), b"just bytes");
}

#[test]
fn blob_opened_before_its_bootstrap_and_damage_detected() {
    let dir = tests::scratch_dir("rafs_ondemand/damage");
    if build(&dir, "img", &["--compressor", "none"]).is_none() {
        return;
    }
    let blobs = dir.join("blobs");
    let image = Image::open(blobs.join("img")).unwrap();
    let id = image.devices()[0].tag.clone();
    let id_str = String::from_utf8(id.clone()).unwrap();
    // A new server that never saw the bootstrap opened: it scans the directory.
    let server = RafsDirServer::new(&blobs).with_verify_digests(true);
    let opened = server.open(&key(&id)).unwrap();
    assert_eq!(opened.size, image.devices()[0].blocks * 4096);
    server.close(&opened.object);

    // Flip a byte of a chunk's stored data (raw: only the digest can tell).
    let rafs = erofs_reader::nydus::RafsMeta::from_image(&image)
        .unwrap()
        .unwrap();
    let blob = rafs.open_blob(&image, 0, &blobs, false).unwrap();
    let c = *blob
        .chunk_infos()
        .unwrap()
        .iter()
        .find(|c| c.uncompressed_size > 4096)
        .expect("a chunk over 4 KiB");
    let path = blobs.join(&id_str);
    let mut data = std::fs::read(&path).unwrap();
    let at = c.compressed_offset as usize + 100;
    data[at] ^= 1;
    std::fs::write(&path, &data).unwrap();
    let server = RafsDirServer::new(&blobs).with_verify_digests(true);
    let opened = server.open(&key(&id)).unwrap();
    let mut buf = vec![0u8; 4096];
    let e = server
        .fill(&opened.object, c.uncompressed_offset, &mut buf)
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("digest"), "{e}");
    // Without digest checks the damaged bytes are served as stored.
    let server = RafsDirServer::new(&blobs);
    let opened = server.open(&key(&id)).unwrap();
    server
        .fill(&opened.object, c.uncompressed_offset, &mut buf)
        .unwrap();
    assert_eq!(buf[100], data[at]);
}

#[test]
fn serves_inline_meta_blob_as_fsid_and_device() {
    let dir = tests::scratch_dir("rafs_ondemand/inline");
    let Some(src) = build_with(
        &dir,
        "inline",
        None,
        &[
            "--compressor",
            "zstd",
            "--blob-inline-meta",
            "--chunk-size",
            "0x10000",
        ],
    ) else {
        return;
    };
    let blobs = dir.join("blobs");
    let name = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let server = RafsDirServer::new(&blobs).with_verify_digests(true);
    // Mounted with fsid=<blob id>: the fsid object is the bootstrap inside the blob.
    let volume = format!("erofs,{name}");
    let fsid_key = ObjectKey {
        volume_key: volume.as_bytes(),
        cookie_key: name.as_bytes(),
    };
    let opened = server.open(&fsid_key).unwrap();
    assert!(matches!(opened.object, RafsObject::Inline(_)));
    let mut boot = vec![0u8; opened.size as usize];
    server.fill(&opened.object, 0, &mut boot).unwrap();
    let image = Image::from_source(boot.clone()).unwrap();
    assert_eq!(image.devices()[0].tag, vec![b'x'; 64]);
    // Its device: the placeholder tag, in the fsid's volume, is the same blob decoded.
    let dev_key = ObjectKey {
        volume_key: volume.as_bytes(),
        cookie_key: &[b'x'; 64],
    };
    let blob = server.open(&dev_key).unwrap();
    assert!(matches!(blob.object, RafsObject::Blob(_)));
    assert_eq!(blob.size, image.devices()[0].blocks * 4096);
    let mut space = vec![0u8; blob.size as usize];
    server.fill(&blob.object, 0, &mut space).unwrap();
    let image = ImageBuilder::new(boot).device(space).build().unwrap();
    let mut want = tree::snapshot_dir(&src);
    let mut got = tree::snapshot_image(&image);
    tree::fill_link_groups(&mut want);
    tree::fill_link_groups(&mut got);
    let how = Compare {
        root_metadata: false,
        ..Compare::default()
    };
    tree::compare(&want, &got, &how).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        server.totals().stats.chunks_verified,
        server.totals().stats.chunks_decoded
    );
    // The placeholder in another volume, whose fsid is no blob, is refused.
    let other = ObjectKey {
        volume_key: b"erofs,nothing",
        cookie_key: &[b'x'; 64],
    };
    assert!(server.open(&other).is_err());
}

/// A blob directory whose every blob is opened as a [`Double`] of it with the store's
/// `state` (the shared handles a test watches or turns): the test doubles below differ only
/// in what their blobs do with it.
struct Doubled<S> {
    dir: ondemand::LocalDirStore,
    state: S,
}

/// A blob of a [`Doubled`] store.
struct Double<S> {
    inner: std::sync::Arc<dyn ondemand::StoredBlob>,
    state: S,
}

impl<S> Doubled<S> {
    fn new(blobs: &std::path::Path, state: S) -> Self {
        Doubled {
            dir: ondemand::LocalDirStore::new(blobs),
            state,
        }
    }
}

impl<S: Clone + Send + Sync + 'static> ondemand::BlobStore for Doubled<S>
where
    Double<S>: ondemand::StoredBlob,
{
    fn open(&self, name: &[u8]) -> io::Result<std::sync::Arc<dyn ondemand::StoredBlob>> {
        Ok(std::sync::Arc::new(Double {
            inner: self.dir.open(name)?,
            state: self.state.clone(),
        }))
    }
    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        self.dir.names()
    }
}

/// A [`Doubled`] store's state: it records each batch and can be made to fail or to corrupt.
#[derive(Clone, Default)]
struct Recording {
    batches: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    /// Single reads (`read_exact_at`), by length.
    reads: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Stored bytes read, by single reads and batches.
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl erofs_reader::Source for Double<Recording> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.state.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("store down"));
        }
        self.state.reads.lock().unwrap().push(buf.len());
        self.state
            .bytes
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl ondemand::StoredBlob for Double<Recording> {
    fn read_ranges(&self, reads: &mut [ondemand::RangeRead<'_>]) -> io::Result<()> {
        self.state.batches.lock().unwrap().push(reads.len());
        if self.state.fail.load(std::sync::atomic::Ordering::SeqCst) {
            // Half the bytes arrive, then the connection drops.
            reads[0].buf.fill(0xee);
            return Err(io::Error::other("connection reset"));
        }
        let n: usize = reads.iter().map(|r| r.buf.len()).sum();
        self.state
            .bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_ranges(reads)
    }
}

/// A zstd RAFS image of 64 KiB chunks built in `dir`: its blob directory, the blob's id and
/// the blob's bytes as the directory server gives them; `None` without nydus-image.
fn zstd_64k_chunks(dir: &Path) -> Option<(PathBuf, Vec<u8>, Vec<u8>)> {
    build(
        dir,
        "img",
        &["--compressor", "zstd", "--chunk-size", "0x10000"],
    )?;
    let blobs = dir.join("blobs");
    let boot = read_object(&RafsDirServer::new(&blobs), b"img");
    let image = Image::from_source(boot).unwrap();
    let id = image.devices()[0].tag.clone();
    let want = read_object(&RafsDirServer::new(&blobs), &id);
    Some((blobs, id, want))
}

/// A READ window over many chunks asks the store once for all their stored bytes (one read:
/// nydus-image stores a file's chunks back to back, and adjacent ranges are one); the bytes
/// equal the directory server's; a store failure fails the read (EIO), never gives bytes.
#[test]
fn a_blob_store_gets_one_request_per_window_and_its_errors_fail_the_read() {
    let dir = tests::scratch_dir("rafs_ondemand/store");
    let Some((blobs, id, want)) = zstd_64k_chunks(&dir) else {
        return;
    };
    let store = Doubled::new(&blobs, Recording::default());
    let (batches, reads, fail) = (
        store.state.batches.clone(),
        store.state.reads.clone(),
        store.state.fail.clone(),
    );
    let server = ondemand::rafs::RafsServer::with_store(store).with_verify_digests(true);
    // The blob opened before its bootstrap: found through the store's names.
    let opened = server.open(&key(&id)).unwrap();
    // Opening read the blob's chunk table: count from here.
    reads.lock().unwrap().clear();
    batches.lock().unwrap().clear();
    let mut window = vec![0u8; 1 << 20];
    server.fill(&opened.object, 0, &mut window).unwrap();
    assert_eq!(&window[..], &want[..1 << 20]);
    let (batches_seen, reads_seen) = (
        batches.lock().unwrap().clone(),
        reads.lock().unwrap().clone(),
    );
    assert_eq!(
        batches_seen.len() + reads_seen.len(),
        1,
        "a 1 MiB window of 64 KiB chunks is one request: batches {batches_seen:?}, reads {reads_seen:?}"
    );

    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut next = vec![0u8; 1 << 20];
    let err = server.fill(&opened.object, 2 << 20, &mut next).unwrap_err();
    assert_eq!(ondemand::errno_of(&err).get(), 5, "EIO: {err}");
    // Back up: the same window reads right (nothing wrong was cached).
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    server.fill(&opened.object, 2 << 20, &mut next).unwrap();
    assert_eq!(&next[..], &want[2 << 20..3 << 20]);
}

/// A prefetch batch (`fill_ranges`) of ranges far apart asks the store once for the stored
/// bytes of all their chunks (a registry store turns that call into few merged, parallel
/// range requests), and each range gets the bytes the directory server gives.
#[test]
fn scattered_ranges_of_a_batch_are_one_store_call() {
    let dir = tests::scratch_dir("rafs_ondemand/batch");
    let Some((blobs, id, want)) = zstd_64k_chunks(&dir) else {
        return;
    };
    let store = Doubled::new(&blobs, Recording::default());
    let (batches, reads) = (store.state.batches.clone(), store.state.reads.clone());
    let server = ondemand::rafs::RafsServer::with_store(store).with_verify_digests(true);
    let opened = server.open(&key(&id)).unwrap();
    // Opening read the blob's chunk table: count from here.
    reads.lock().unwrap().clear();
    batches.lock().unwrap().clear();
    assert!(want.len() > 2 << 20, "{}", want.len());
    // Three ranges in different 64 KiB chunks, far apart; the second across a chunk boundary.
    let at = [
        (4096u64, 8192usize),
        ((1 << 20) + (60 << 10), 8192),
        (want.len() as u64 - 150_000, 100_000),
    ];
    let mut bufs: Vec<Vec<u8>> = at.iter().map(|&(_, n)| vec![0; n]).collect();
    let mut ranges: Vec<ondemand::RangeRead<'_>> = at
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&(offset, _), buf)| ondemand::RangeRead { offset, buf })
        .collect();
    server.fill_ranges(&opened.object, &mut ranges).unwrap();
    drop(ranges);
    for (&(off, n), buf) in at.iter().zip(&bufs) {
        assert_eq!(&buf[..], &want[off as usize..off as usize + n], "at {off}");
    }
    let (batches_seen, reads_seen) = (
        batches.lock().unwrap().clone(),
        reads.lock().unwrap().clone(),
    );
    assert_eq!(batches_seen.len(), 1, "one store call: {batches_seen:?}");
    assert!(batches_seen[0] >= 2, "{batches_seen:?}");
    assert!(reads_seen.is_empty(), "no single reads: {reads_seen:?}");
    // A range past the blob's end fails the batch, with no read.
    let mut past = vec![0u8; 4096];
    let mut ranges = [ondemand::RangeRead {
        offset: want.len() as u64 - 100,
        buf: &mut past,
    }];
    assert!(server.fill_ranges(&opened.object, &mut ranges).is_err());
    assert_eq!(batches.lock().unwrap().len(), 1);
}

/// Two windows that split a chunk between them fetch its stored bytes once: the second finds
/// it decoded (the kernel's windows and fills ahead need not be chunk-aligned).
#[test]
fn windows_that_split_a_chunk_fetch_it_once() {
    let dir = tests::scratch_dir("rafs_ondemand/split");
    let Some((blobs, id, want)) = zstd_64k_chunks(&dir) else {
        return;
    };
    let fetched = |windows: &[(u64, usize)]| {
        let store = Doubled::new(&blobs, Recording::default());
        let bytes = store.state.bytes.clone();
        let server = ondemand::rafs::RafsServer::with_store(store);
        let opened = server.open(&key(&id)).unwrap();
        for &(off, len) in windows {
            let mut buf = vec![0u8; len];
            server.fill(&opened.object, off, &mut buf).unwrap();
            assert_eq!(&buf[..], &want[off as usize..off as usize + len]);
        }
        bytes.load(std::sync::atomic::Ordering::SeqCst)
    };
    // 64 KiB chunks: [0, 160 KiB) ends in chunk 2, [160 KiB, 320 KiB) starts in it.
    let whole = fetched(&[(0, 320 << 10)]);
    let split = fetched(&[(0, 160 << 10), (160 << 10, 160 << 10)]);
    assert!(whole > 0);
    assert_eq!(split, whole, "the split chunk was fetched twice");
}

/// A gate for a [`Doubled`] store's blobs ([`GatedState`]): the first store call after `arm`
/// blocks until a second call comes (or 10 s pass); it counts the bytes handed out.
#[derive(Clone, Default)]
struct Gated {
    state: std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    calls: usize,
    /// The first call was let go by a second one (not by the time limit).
    released_by_second: bool,
    bytes: u64,
}

impl Gated {
    fn arm(&self) {
        let mut st = self.state.0.lock().unwrap();
        *st = GateState {
            armed: true,
            ..GateState::default()
        };
    }

    /// Count a call of `bytes`; the first one after `arm` waits for a second.
    fn pass(&self, bytes: usize) {
        let (lock, cond) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.bytes += bytes as u64;
        if !st.armed {
            return;
        }
        st.calls += 1;
        if st.calls == 1 {
            let (st2, _) = cond
                .wait_timeout_while(st, std::time::Duration::from_secs(10), |s| s.calls < 2)
                .unwrap();
            st = st2;
            st.released_by_second = st.calls >= 2;
        } else {
            cond.notify_all();
        }
    }
}

/// A [`Doubled`] store's state: a [`Gated`] gate, and whether its blobs stream (hand each
/// range over as it is read) or not.
#[derive(Clone)]
struct GatedState {
    gate: Gated,
    streams: bool,
}

impl erofs_reader::Source for Double<GatedState> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.state.gate.pass(buf.len());
        self.inner.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl ondemand::StoredBlob for Double<GatedState> {
    fn read_ranges(&self, reads: &mut [ondemand::RangeRead<'_>]) -> io::Result<()> {
        self.state
            .gate
            .pass(reads.iter().map(|r| r.buf.len()).sum());
        self.inner.read_ranges(reads)
    }
    fn streams(&self) -> bool {
        self.state.streams
    }
    fn read_ranges_arriving(
        &self,
        reads: &mut [ondemand::RangeRead<'_>],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> io::Result<()> {
        self.state
            .gate
            .pass(reads.iter().map(|r| r.buf.len()).sum());
        for r in reads.iter_mut() {
            self.inner.read_exact_at(r.buf, r.offset)?;
            arrived(r.offset, r.buf);
        }
        Ok(())
    }
}

/// Two windows that split a chunk, filled at once: the second asks the store for its own
/// chunks while the first is still fetching (it does not wait for that whole fetch), waits
/// only for the split chunk, and nothing is fetched twice; from a store that streams (a
/// registry) or not. The store holds the first window's request until a second request
/// comes: before `ChunkClaims`, the second window waited for the first to end, and the first
/// was let go only by the 10 s limit.
#[test]
fn a_window_sharing_a_chunk_with_one_in_flight_fetches_its_other_chunks_meanwhile() {
    let dir = tests::scratch_dir("rafs_ondemand/shared_chunk");
    let Some((blobs, id, want)) = zstd_64k_chunks(&dir) else {
        return;
    };
    for streams in [false, true] {
        let serve = |gate: &Gated| {
            ondemand::rafs::RafsServer::with_store(Doubled::new(
                &blobs,
                GatedState {
                    gate: gate.clone(),
                    streams,
                },
            ))
            .with_verify_digests(true)
        };
        let fill = |server: &ondemand::rafs::RafsServer<Doubled<GatedState>>,
                    object: &RafsObject,
                    off: u64,
                    buf: &mut [u8]| {
            if streams {
                server.fill_streaming(object, off, buf, &mut |_| {})
            } else {
                server.fill(object, off, buf)
            }
        };
        // Both windows as one, alone (the gate not armed): what they fetch together.
        let whole = {
            let gate = Gated::default();
            let server = serve(&gate);
            let opened = server.open(&key(&id)).unwrap();
            gate.state.0.lock().unwrap().bytes = 0;
            let mut buf = vec![0u8; 320 << 10];
            fill(&server, &opened.object, 0, &mut buf).unwrap();
            assert_eq!(&buf[..], &want[..320 << 10]);
            gate.state.0.lock().unwrap().bytes
        };
        let gate = Gated::default();
        let server = serve(&gate);
        let opened = server.open(&key(&id)).unwrap();
        gate.arm();
        // 64 KiB chunks: [0, 160 KiB) ends in chunk 2, [160 KiB, 320 KiB) starts in it.
        let mut first = vec![0u8; 160 << 10];
        let mut second = vec![0u8; 160 << 10];
        std::thread::scope(|s| {
            let a = s.spawn(|| fill(&server, &opened.object, 0, &mut first));
            // The first window's request is in (and held) before the second window starts.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while gate.state.0.lock().unwrap().calls == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the first window asked nothing"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            fill(&server, &opened.object, 160 << 10, &mut second).unwrap();
            a.join().unwrap().unwrap();
        });
        assert_eq!(&first[..], &want[..160 << 10], "streams {streams}");
        assert_eq!(
            &second[..],
            &want[160 << 10..320 << 10],
            "streams {streams}"
        );
        let st = gate.state.0.lock().unwrap();
        assert!(
            st.released_by_second,
            "streams {streams}: the second window's request waited for the first window's whole fetch"
        );
        assert_eq!(
            st.bytes, whole,
            "streams {streams}: the split chunk was fetched twice"
        );
    }
}

/// A [`Doubled`] store's state: its blobs stream, handing each range over (and logging it) as
/// it is read, one by one, and can be made to break after `break_after` ranges.
#[derive(Clone, Default)]
struct Streaming {
    events: std::sync::Arc<std::sync::Mutex<Vec<(char, u64)>>>,
    break_after: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl erofs_reader::Source for Double<Streaming> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.state.events.lock().unwrap().push(('s', offset));
        self.inner.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl ondemand::StoredBlob for Double<Streaming> {
    fn streams(&self) -> bool {
        true
    }
    fn read_ranges_arriving(
        &self,
        reads: &mut [ondemand::RangeRead<'_>],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> io::Result<()> {
        self.state
            .events
            .lock()
            .unwrap()
            .push(('b', reads.len() as u64));
        let limit = self
            .state
            .break_after
            .load(std::sync::atomic::Ordering::SeqCst);
        for (i, r) in reads.iter_mut().enumerate() {
            if i == limit {
                return Err(io::Error::other("connection reset"));
            }
            self.inner.read_exact_at(r.buf, r.offset)?;
            self.state.events.lock().unwrap().push(('a', r.offset));
            arrived(r.offset, r.buf);
        }
        Ok(())
    }
}

/// Over a store that streams, a window's chunks are decoded as their stored bytes arrive:
/// the server reports growing prefixes of the window, the first before the last chunk's
/// bytes are in, every prefix holds the right bytes, all from one store call; a store that
/// breaks mid-window fails the fill after reporting only right bytes, and the same window
/// then reads right.
#[test]
fn a_streaming_store_is_decoded_as_it_arrives() {
    let dir = tests::scratch_dir("rafs_ondemand/stream");
    let Some((blobs, id, want)) = zstd_64k_chunks(&dir) else {
        return;
    };
    let store = Doubled::new(
        &blobs,
        Streaming {
            events: Default::default(),
            break_after: std::sync::Arc::new(usize::MAX.into()),
        },
    );
    let (events, break_after) = (store.state.events.clone(), store.state.break_after.clone());
    let server = ondemand::rafs::RafsServer::with_store(store).with_verify_digests(true);
    // The bootstrap first, as the kernel opens them: the blob's open then reads its chunk
    // map (the array and the header after it) with one read, not one each.
    server.open(&key(b"img")).unwrap();
    events.lock().unwrap().clear();
    let opened = server.open(&key(&id)).unwrap();
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "{:?}",
        events.lock().unwrap()
    );
    events.lock().unwrap().clear();
    // A window starting mid-chunk, as READ windows do.
    let off = 12u64 << 10;
    let mut window = vec![0u8; 1 << 20];
    let mut prefixes = Vec::new();
    let mut ready = |prefix: &[u8]| {
        assert_eq!(prefix, &want[off as usize..off as usize + prefix.len()]);
        events.lock().unwrap().push(('r', prefix.len() as u64));
        prefixes.push(prefix.len());
    };
    server
        .fill_streaming(&opened.object, off, &mut window, &mut ready)
        .unwrap();
    assert_eq!(&window[..], &want[off as usize..off as usize + (1 << 20)]);
    let seen = events.lock().unwrap().clone();
    // 1 MiB from 12 KiB touches 17 chunks of 64 KiB: one store call for all of them, no
    // single read.
    assert_eq!(seen.first(), Some(&('b', 17)), "{seen:?}");
    assert_eq!(seen.iter().filter(|e| e.0 == 'b').count(), 1, "{seen:?}");
    assert!(!seen.iter().any(|e| e.0 == 's'), "{seen:?}");
    let first_ready = seen.iter().position(|e| e.0 == 'r').unwrap();
    let last_arrival = seen.iter().rposition(|e| e.0 == 'a').unwrap();
    assert!(first_ready < last_arrival, "{seen:?}");
    assert!(prefixes.windows(2).all(|w| w[0] < w[1]), "{prefixes:?}");
    assert!(prefixes.len() >= 16, "{prefixes:?}");
    assert_eq!(prefixes.last(), Some(&(1 << 20)));

    // Broken after 5 of 17 ranges (the next window): an error, and only right bytes reported.
    break_after.store(5, std::sync::atomic::Ordering::SeqCst);
    let off = 2u64 << 20;
    let mut prefixes = Vec::new();
    let mut ready = |prefix: &[u8]| {
        assert_eq!(prefix, &want[off as usize..off as usize + prefix.len()]);
        prefixes.push(prefix.len());
    };
    let mut next = vec![0u8; 1 << 20];
    let err = server
        .fill_streaming(&opened.object, off, &mut next, &mut ready)
        .unwrap_err();
    assert_eq!(ondemand::errno_of(&err).get(), 5, "EIO: {err}");
    assert!(
        prefixes.last().is_some_and(|&n| n <= 5 << 16),
        "{prefixes:?}"
    );
    break_after.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    server.fill(&opened.object, off, &mut next).unwrap();
    assert_eq!(&next[..], &want[off as usize..off as usize + (1 << 20)]);
}

/// Bytes of a store [`Trickling`] hands over at a time.
const PART: usize = 16 << 10;

/// What [`Trickling`] does to the stored bytes of one range.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Hands over the stored bytes before this offset, then fails (a body cut short).
    Cut(u64),
    /// Zeros from this offset to the end of the range (a zstd block header there: empty
    /// raw blocks, the frame never ends).
    ZerosFrom(u64),
    /// The block header at this offset says "reserved" (a bad frame).
    BadBlock(u64),
}

/// A [`Doubled`] store's state: its blobs stream a range a part at a time ([`PART`] bytes),
/// logging `('a', end of the part)`, with optional damage.
#[derive(Clone, Default)]
struct Trickling {
    events: std::sync::Arc<std::sync::Mutex<Vec<(char, u64)>>>,
    damage: std::sync::Arc<std::sync::Mutex<Option<Damage>>>,
}

impl erofs_reader::Source for Double<Trickling> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
}

impl ondemand::StoredBlob for Double<Trickling> {
    fn streams(&self) -> bool {
        true
    }
    fn read_ranges_arriving(
        &self,
        reads: &mut [ondemand::RangeRead<'_>],
        arrived: &(dyn Fn(u64, &[u8]) + Sync),
    ) -> io::Result<()> {
        let damage = *self.state.damage.lock().unwrap();
        for r in reads.iter_mut() {
            self.inner.read_exact_at(r.buf, r.offset)?;
            let end = r.offset + r.buf.len() as u64;
            let inside = |at: u64| (r.offset..end).contains(&at);
            let rel = |at: u64| (at - r.offset) as usize;
            match damage {
                Some(Damage::ZerosFrom(at)) if inside(at) => r.buf[rel(at)..].fill(0),
                Some(Damage::BadBlock(at)) if inside(at) => r.buf[rel(at)] |= 0b110,
                _ => {}
            }
            for (i, part) in r.buf.chunks(PART).enumerate() {
                let at = r.offset + (i * PART) as u64;
                if let Some(Damage::Cut(cut)) = damage
                    && (at..at + part.len() as u64).contains(&cut)
                {
                    arrived(at, &part[..(cut - at) as usize]);
                    return Err(io::Error::other("connection reset"));
                }
                self.state
                    .events
                    .lock()
                    .unwrap()
                    .push(('a', at + part.len() as u64));
                arrived(at, part);
            }
        }
        Ok(())
    }
}

/// A zstd image of 1 MiB chunks (nydus-image's default) over compressible text and
/// incompressible noise (stored raw): `(blob dir, blob id, the blob's uncompressed bytes)`.
fn zstd_1m_chunks(dir: &Path) -> Option<(PathBuf, Vec<u8>, Vec<u8>)> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Words drawn from a small vocabulary: compresses about 3x, in many zstd blocks.
    let words = [
        "ready ", "import ", "asyncio ", "json\n", "sqlite3 ", "email ", "ssl\n",
    ];
    let text: Vec<u8> = tests::vm::noise(7, 700_000)
        .iter()
        .flat_map(|b| words[*b as usize % words.len()].bytes())
        .collect();
    std::fs::write(src.join("text"), &text).unwrap();
    std::fs::write(src.join("noise"), tests::vm::noise(5, 2_500_000)).unwrap();
    let blobs = dir.join("blobs");
    tests::nydus_image::Create::new(&src, &blobs)
        .bootstrap(&blobs.join("img"))
        .args(&["--compressor", "zstd"])
        .run()?;
    let boot = read_object(&RafsDirServer::new(&blobs), b"img");
    let image = Image::from_source(boot).unwrap();
    let id = image.devices()[0].tag.clone();
    let want = read_object(&RafsDirServer::new(&blobs), &id);
    Some((blobs, id, want))
}

/// The chunk infos of an opened blob.
fn chunk_infos(object: &RafsObject) -> Vec<erofs_format::rafs::ChunkInfo> {
    let RafsObject::Blob(blob) = object else {
        panic!("not a blob: {object:?}");
    };
    blob.source().chunk_infos().unwrap().to_vec()
}

/// Where the blocks of a zstd frame start (their 3-byte headers), from its header.
fn zstd_blocks(frame: &[u8]) -> Vec<usize> {
    assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let fhd = frame[4];
    let single = fhd & 0x20 != 0;
    let dict = [0, 1, 2, 4][(fhd & 3) as usize];
    let fcs = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = 5 + usize::from(!single) + dict + fcs;
    let mut out = Vec::new();
    loop {
        out.push(at);
        let h =
            u32::from(frame[at]) | u32::from(frame[at + 1]) << 8 | u32::from(frame[at + 2]) << 16;
        let size = match (h >> 1) & 3 {
            1 => 1,
            _ => (h >> 3) as usize,
        };
        at += 3 + size;
        if h & 1 == 1 {
            return out;
        }
    }
}

/// A chunk's bytes are decoded as they arrive (issue 14): over a store that hands a 1 MiB
/// chunk over 16 KiB at a time, a READ at the chunk's start is reported final (its first
/// 64 KiB) before the chunk's last stored byte arrived, for a zstd chunk decoded in place,
/// for one only partly inside the read (decoded aside, then kept for the next read), and
/// for a raw chunk; every prefix holds the directory server's bytes.
#[test]
fn a_chunk_is_decoded_as_its_bytes_arrive() {
    let dir = tests::scratch_dir("rafs_ondemand/trickle");
    let Some((blobs, id, want)) = zstd_1m_chunks(&dir) else {
        return;
    };
    let store = Doubled::new(&blobs, Trickling::default());
    let events = store.state.events.clone();
    let server = ondemand::rafs::RafsServer::with_store(store);
    server.open(&key(b"img")).unwrap();
    let opened = server.open(&key(&id)).unwrap();
    let chunks = chunk_infos(&opened.object);
    let zstd = chunks
        .iter()
        .find(|c| c.compressed && c.uncompressed_size == 1 << 20)
        .copied()
        .expect("a compressed 1 MiB chunk");
    assert!(zstd.compressed_size as usize > 8 * PART, "{zstd:?}");
    let raw = chunks
        .iter()
        .find(|c| !c.compressed && c.uncompressed_size == 1 << 20)
        .copied()
        .expect("a raw 1 MiB chunk");
    // (window start, the chunk it starts in)
    let cases = [
        (zstd.uncompressed_offset, zstd),
        (zstd.uncompressed_offset + (12 << 10), zstd),
        (raw.uncompressed_offset, raw),
    ];
    for (off, chunk) in cases {
        events.lock().unwrap().clear();
        let len = (1u64 << 20).min(want.len() as u64 - off) as usize;
        let mut window = vec![0u8; len];
        let mut ready = |prefix: &[u8]| {
            assert_eq!(prefix, &want[off as usize..off as usize + prefix.len()]);
            events.lock().unwrap().push(('r', prefix.len() as u64));
        };
        server
            .fill_streaming(&opened.object, off, &mut window, &mut ready)
            .unwrap();
        assert!(
            window == want[off as usize..off as usize + len],
            "window at {off}"
        );
        let seen = events.lock().unwrap().clone();
        let first_64k = seen
            .iter()
            .position(|e| e.0 == 'r' && e.1 >= 64 << 10)
            .unwrap_or_else(|| panic!("no 64 KiB reported: {seen:?}"));
        let chunk_arrived = seen
            .iter()
            .position(|e| e.0 == 'a' && e.1 == chunk.compressed_end())
            .unwrap_or_else(|| panic!("the chunk's end never arrived: {seen:?}"));
        assert!(
            first_64k < chunk_arrived,
            "window at {off} ({chunk:?}): the first 64 KiB waited for the whole chunk: {seen:?}"
        );
    }
}

/// A chunk whose stored bytes turn out bad or short after part of it was decoded and
/// reported fails the fill (the store's error, or InvalidData for a bad stream) having reported only right bytes, some of that chunk's
/// among them; the same window then reads right.
#[test]
fn a_bad_or_short_chunk_stream_fails_having_reported_right_bytes() {
    let dir = tests::scratch_dir("rafs_ondemand/trickle-bad");
    let Some((blobs, id, want)) = zstd_1m_chunks(&dir) else {
        return;
    };
    let store = Doubled::new(&blobs, Trickling::default());
    let damage = store.state.damage.clone();
    let server = ondemand::rafs::RafsServer::with_store(store).with_chunk_cache(0);
    server.open(&key(b"img")).unwrap();
    let opened = server.open(&key(&id)).unwrap();
    let chunk = chunk_infos(&opened.object)
        .into_iter()
        .find(|c| c.compressed && c.uncompressed_size == 1 << 20)
        .expect("a compressed 1 MiB chunk");
    let frame = {
        let mut b = vec![0u8; chunk.compressed_size as usize];
        let blob = ondemand::BlobStore::open(&ondemand::LocalDirStore::new(&blobs), &id).unwrap();
        blob.read_exact_at(&mut b, chunk.compressed_offset).unwrap();
        b
    };
    let blocks = zstd_blocks(&frame);
    assert!(blocks.len() >= 4, "{blocks:?}");
    // A block boundary past the first two parts: something of the chunk decodes first.
    let at = chunk.compressed_offset
        + *blocks
            .iter()
            .find(|&&b| b > 2 * PART)
            .expect("a block past 32 KiB") as u64;
    let off = chunk.uncompressed_offset;
    for d in [
        Damage::Cut(at + 5),
        Damage::ZerosFrom(at),
        Damage::BadBlock(at),
    ] {
        *damage.lock().unwrap() = Some(d);
        let mut window = vec![0u8; 1 << 20];
        let mut reported = 0;
        let mut ready = |prefix: &[u8]| {
            assert!(
                prefix == &want[off as usize..off as usize + prefix.len()],
                "{d:?}: wrong bytes reported"
            );
            reported = prefix.len();
        };
        let err = server
            .fill_streaming(&opened.object, off, &mut window, &mut ready)
            .unwrap_err();
        // A cut body is the store's error (EIO); a bad stream is a corrupt chunk, as the
        // whole-chunk decoder says it (InvalidData).
        match d {
            Damage::Cut(_) => assert_eq!(ondemand::errno_of(&err).get(), 5, "{d:?}: {err}"),
            _ => assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{d:?}: {err}"),
        }
        assert!(
            ((64 << 10)..(1 << 20)).contains(&reported),
            "{d:?}: {reported} bytes reported before the fault"
        );
        *damage.lock().unwrap() = None;
        server.fill(&opened.object, off, &mut window).unwrap();
        assert!(
            window == want[off as usize..off as usize + (1 << 20)],
            "{d:?}"
        );
    }
}
