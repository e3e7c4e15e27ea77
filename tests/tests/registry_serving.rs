//! `ondemand::registry` against a real registry (Debian's docker-registry, images pushed by
//! skopeo), through the engine as the kernel drives it, on the host: the session gets OPEN
//! and READ requests for every object the kernel would mount, its writes go to files (each
//! write checked against the independent truth: the layer blob skopeo pushed, or the blob
//! decoded from the local files nydus-image wrote), and the files are then mounted by the
//! host kernel (file-backed, the EROFS layers overlaid by `Rootfs::mount`) and compared with
//! the source tree. The host kernel (6.18) has neither fscache ondemand nor fanotify on
//! EROFS; the VM tests run the same server under both transports.
//!
//! Faults (the fault proxy between the client and the registry): each is survived (retried)
//! or the READ fails with nothing written, the session keeps serving, and a later READ fills
//! the range. No write ever carries a wrong byte.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_lazy::{Client, Config, Reference, RetryPolicy};
use ondemand::proto::{MsgId, ObjectId, OpenRequest, ReadRequest, Request};
use ondemand::rafs::RafsServer;
use ondemand::registry::{
    ImageKind, RegistryStore, RemoteImage, ResolveOptions, Rootfs, lazy_config,
};
use ondemand::{AlignedBuf, BlobStore, ObjectFd, ObjectKey, OnDemandServer, Session, Sink};
use tests::fault_proxy::{Fault, FaultProxy, Match};
use tests::oci_images::{self, LayeredTree};
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::Registry;
use tests::skopeo::Skopeo;
use tests::tree::{self, Compare, MtimeCheck};

/// The kernel's per-object fd: a file, every write checked against `want`.
struct FileSink {
    file: File,
    want: Arc<Vec<u8>>,
    wrong: AtomicU64,
    written: AtomicU64,
    completed: Mutex<Vec<MsgId>>,
}

impl Sink for FileSink {
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
        let start = (off as usize).min(self.want.len());
        let end = (off as usize + data.len()).min(self.want.len());
        let (inside, past) = data.split_at(end - start);
        if inside != &self.want[start..end] || past.iter().any(|&b| b != 0) {
            self.wrong.fetch_add(1, Ordering::SeqCst);
        }
        self.written.fetch_add(data.len() as u64, Ordering::SeqCst);
        self.file.write_all_at(data, off)
    }
}

impl ObjectFd for FileSink {
    fn read_complete(&self, msg_id: MsgId) -> io::Result<()> {
        self.completed.lock().unwrap().push(msg_id);
        Ok(())
    }
}

type Served = Session<RafsServer<RegistryStore>, FileSink>;

/// Plays the kernel: OPENs, READs, files under `out`.
struct Kernel {
    session: Served,
    out: PathBuf,
    ids: HashMap<String, (ObjectId, u64)>,
    next: u32,
    buf: AlignedBuf,
}

impl Kernel {
    fn new(image: &RemoteImage, out: &Path) -> Kernel {
        Kernel::with(image, out, 1 << 20, true)
    }

    /// `verify`: check Nydus chunk digests.
    fn with(image: &RemoteImage, out: &Path, readahead: u64, verify: bool) -> Kernel {
        Kernel::serving(
            Session::new(image.server().with_verify_digests(verify))
                .with_readahead(readahead)
                .with_sequential_ahead(0),
            out,
        )
    }

    /// Plays the kernel to `session`.
    fn serving(session: Served, out: &Path) -> Kernel {
        std::fs::create_dir_all(out).unwrap();
        Kernel {
            session,
            out: out.to_path_buf(),
            ids: HashMap::new(),
            next: 1,
            buf: AlignedBuf::new(4 << 20),
        }
    }

    fn send(&mut self, request: &Request<'_>, fd: Option<FileSink>) {
        let actions = self.session.handle(request, fd);
        self.session.execute(actions, &|_| Ok(()), &mut self.buf);
    }

    /// OPEN `key` in volume `erofs,VOLUME`, its writes checked against `want`.
    fn open(&mut self, volume: &str, key: &str, want: Vec<u8>) -> u64 {
        self.try_open(volume, key, want)
            .expect("the OPEN was accepted")
    }

    /// OPEN `key` as [`open`](Self::open) does; its size, or `None` if the session refused
    /// it.
    fn try_open(&mut self, volume: &str, key: &str, want: Vec<u8>) -> Option<u64> {
        let errors = self.session.stats().open_errors;
        let id = ObjectId(self.next);
        let sink = FileSink {
            file: File::create(self.out.join(key)).unwrap(),
            want: Arc::new(want),
            wrong: AtomicU64::new(0),
            written: AtomicU64::new(0),
            completed: Mutex::new(Vec::new()),
        };
        let volume_key = format!("erofs,{volume}");
        self.send(
            &Request::Open(OpenRequest {
                msg_id: MsgId(self.next),
                object_id: id,
                volume_key: volume_key.as_bytes(),
                cookie_key: key.as_bytes(),
                fd: 100 + self.next,
                flags: 0,
            }),
            Some(sink),
        );
        self.next += 1;
        let Some(object) = self.session.object(id) else {
            assert_eq!(self.session.stats().open_errors, errors + 1);
            return None;
        };
        let size = object.size();
        self.ids.insert(key.to_owned(), (id, size));
        Some(size)
    }

    fn sink(&self, key: &str) -> Arc<ondemand::Object<ondemand::rafs::RafsObject, FileSink>> {
        self.session.object(self.ids[key].0).unwrap()
    }

    /// One READ of `len` bytes at `off` (block-aligned, as the kernel sends them).
    fn read(&mut self, key: &str, off: u64, len: u64) {
        let id = self.ids[key].0;
        self.next += 1;
        self.send(
            &Request::Read(ReadRequest {
                msg_id: MsgId(self.next),
                object_id: id,
                off,
                len,
            }),
            None,
        );
    }

    /// READs through the whole object, 1 MiB at a time; the file then holds every byte.
    fn read_all(&mut self, key: &str) -> PathBuf {
        let size = self.ids[key].1;
        let mut off = 0;
        while off < size {
            self.read(key, off, (size - off).min(1 << 20).next_multiple_of(4096));
            off += 1 << 20;
        }
        let path = self.out.join(key);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(size)
            .unwrap();
        path
    }

    fn wrong_writes(&self) -> u64 {
        self.ids
            .keys()
            .map(|k| self.sink(k).sink().wrong.load(Ordering::SeqCst))
            .sum()
    }
}

fn compare_trees(want: &Path, got: &Path) {
    let mut w = tree::snapshot_dir(want);
    let mut g = tree::snapshot_dir(got);
    tree::fill_link_groups(&mut w);
    tree::fill_link_groups(&mut g);
    let how = Compare {
        mtime: MtimeCheck::Seconds,
        root_metadata: false,
        xattrs: false,
        dir_nlink: false,
    };
    if let Err(d) = tree::compare(&w, &g, &how) {
        panic!("{} differs from {}:\n{d}", got.display(), want.display());
    }
}

/// A plain registry with `build`'s image pushed as `serving:TAG`.
struct Pushed {
    reg: Registry,
    dir: PathBuf,
    tree: LayeredTree,
    layout: OciLayout,
}

fn push(
    name: &str,
    tag: &str,
    build: impl FnOnce(&OciLayout, &LayeredTree, &Path),
) -> Option<Pushed> {
    let reg = Registry::plain(name)?;
    let dir = reg.dir().to_path_buf();
    let skopeo = Skopeo::new(&dir.join("skopeo"))?;
    let tree = oci_images::layered_tree(&dir.join("tree"), 1 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    build(&layout, &tree, &dir);
    skopeo.push(layout.dir(), tag, &reg, &format!("serving:{tag}"));
    Some(Pushed {
        reg,
        dir,
        tree,
        layout,
    })
}

fn client(retry_attempts: u32) -> Client {
    let mut config = Config::default();
    config.retry = RetryPolicy {
        attempts: retry_attempts,
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    Client::new(lazy_config(config)).unwrap()
}

fn resolve(reference: &str, retry_attempts: u32) -> RemoteImage {
    let r: Reference = reference.parse().unwrap();
    RemoteImage::resolve(&client(retry_attempts), &r).unwrap()
}

/// Mount each served layer file-backed and overlay them with `Rootfs::mount`; compare.
fn mount_and_compare(
    image: &RemoteImage,
    files: &HashMap<String, PathBuf>,
    work: &Path,
    want: &Path,
) {
    let target = work.join("rootfs");
    std::fs::create_dir_all(&target).unwrap();
    let rootfs = Rootfs::mount(image, work, &target, |key, dir| {
        ondemand::mount::mount_file_backed(&files[key], &[], dir)
    })
    .expect("mount the layers and their overlay");
    let result = std::panic::catch_unwind(|| compare_trees(want, &target));
    rootfs.unmount().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn erofs_layers_served_from_the_registry_overlay_to_the_tree() {
    if tests::require_root("mounting EROFS layers and overlayfs with the host kernel").is_none() {
        return;
    }
    let mut built = None;
    let Some(p) = push("registry_serving/erofs", "erofs", |layout, tree, dir| {
        let i =
            oci_images::erofs_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("erofs", &i.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let image = resolve(&p.reg.reference("serving:erofs"), 3);
    let ImageKind::ErofsLayers { layers } = &image.kind else {
        panic!("an EROFS-layer image, got {:?}", image.kind);
    };
    assert_eq!(layers.len(), 2);
    let mut kernel = Kernel::new(&image, &p.dir.join("objects"));
    let mut files = HashMap::new();
    for (key, desc) in layers.iter().zip(&built.layers) {
        assert_eq!(key, desc.hex(), "a layer's object key is its digest");
        let want = p.layout.read_blob(&desc.digest);
        // fsid = the layer's digest: one volume per layer.
        let size = kernel.open(key, key, want.clone());
        assert_eq!(size, want.len() as u64);
        files.insert(key.to_string(), kernel.read_all(key));
        assert_eq!(std::fs::read(&files[key]).unwrap(), want);
    }
    assert_eq!(kernel.wrong_writes(), 0);
    let stats = kernel.session.stats();
    assert_eq!(stats.read_errors, 0, "{stats:?}");
    let s = image.store().client().stats();
    let layer_bytes: u64 = built.layers.iter().map(|l| l.size).sum();
    eprintln!(
        "EROFS layers ({layer_bytes} bytes): {} requests, {} bytes from the registry",
        s.requests, s.bytes
    );
    // Each layer's bytes came once (plus the manifest), in ranged requests.
    let (served_requests, served_bytes) = built
        .layers
        .iter()
        .map(|l| p.reg.blob_served(&l.digest))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    // Counted at the registry: every byte once, plus the server's look at each layer's
    // head (is it a RAFS bootstrap?) when it is opened.
    assert!(
        (layer_bytes..layer_bytes + 2 * 16384).contains(&served_bytes),
        "{served_bytes} bytes served for {layer_bytes} bytes of layers"
    );
    assert!(served_requests >= 2);
    mount_and_compare(&image, &files, &p.dir, &p.tree.merged);
}

/// The uncompressed space of each blob, from the local files nydus-image wrote (the truth
/// the registry path must reproduce).
fn local_space(nydus: &oci_images::NydusImage, id: &str) -> Vec<u8> {
    let dir = nydus.blob_dir.clone();
    std::fs::copy(&nydus.bootstrap, dir.join("local-boot")).unwrap();
    let server = ondemand::rafs::RafsDirServer::new(&dir);
    let key = |c: &'static [u8]| ObjectKey {
        volume_key: b"erofs,local",
        cookie_key: c,
    };
    let boot = server.open(&key(b"local-boot")).unwrap();
    server.close(&boot.object);
    let id: &'static [u8] = Box::leak(id.as_bytes().to_vec().into_boxed_slice());
    let opened = server.open(&key(id)).unwrap();
    let mut out = vec![0u8; opened.size as usize];
    server.fill(&opened.object, 0, &mut out).unwrap();
    out
}

fn nydus_round_trip(name: &str, zran: bool) {
    if tests::require_root("mounting RAFS v6 with the host kernel").is_none() {
        return;
    }
    let mut built = None;
    let Some(p) = push(name, "nydus", |layout, tree, dir| {
        let work = dir.join("work");
        let i = if zran {
            // One layer: nydus-image 2.2 cannot stack targz-ref layers (see the fixture).
            oci_images::nydus_zran_image(layout, &[&tree.lower], &Platform::host(), &work)
        } else {
            oci_images::nydus_image(layout, &tree.layers(), &Platform::host(), &work)
        }
        .unwrap();
        layout.tag("nydus", &i.image.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let image = resolve(&p.reg.reference("serving:nydus"), 3);
    let ImageKind::Nydus { bootstrap, blobs } = image.kind.clone() else {
        panic!("a Nydus image, got {:?}", image.kind);
    };
    assert_eq!(blobs, built.blob_ids);
    let mut kernel = Kernel::with(&image, &p.dir.join("objects"), 1 << 20, true);
    let want_boot = std::fs::read(&built.bootstrap).unwrap();
    assert_eq!(
        kernel.open(&bootstrap, &bootstrap, want_boot.clone()),
        want_boot.len() as u64
    );
    let boot_file = kernel.read_all(&bootstrap);
    let mut devices = Vec::new();
    for id in &blobs {
        let want = local_space(&built, id);
        // The kernel opens each device in the bootstrap's volume, by blob id.
        assert_eq!(kernel.open(&bootstrap, id, want.clone()), want.len() as u64);
        devices.push(kernel.read_all(id));
        let got = std::fs::read(devices.last().unwrap()).unwrap();
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got == want,
            "blob {id}: {} vs {} bytes, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
    assert_eq!(kernel.wrong_writes(), 0);
    assert_eq!(kernel.session.stats().read_errors, 0);
    let s = image.store().client().stats();
    eprintln!(
        "Nydus{} ({} bytes of layers): {} requests, {} bytes from the registry",
        if zran { " zran" } else { "" },
        image.size,
        s.requests,
        s.bytes
    );
    let m = tree::KernelMount::new(&boot_file, &devices);
    compare_trees(if zran { &p.tree.lower } else { &p.tree.merged }, m.path());
}

/// `fetch_chunk_maps_early`: the blob's chunk map is fetched before the kernel opens the
/// blob, with the one request the open would have made, and the open then asks the registry
/// nothing; the blob still reads as the local one.
#[test]
fn a_chunk_map_fetched_early_serves_the_blob_open() {
    let mut built = None;
    let Some(p) = push("registry_serving/early", "nydus", |layout, tree, dir| {
        let i =
            oci_images::nydus_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("nydus", &i.image.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let image = resolve(&p.reg.reference("serving:nydus"), 3);
    let ImageKind::Nydus { bootstrap, blobs } = image.kind.clone() else {
        panic!("a Nydus image, got {:?}", image.kind);
    };
    // What the registry served of each blob so far (skopeo's push checks included).
    let served = |id: &str| p.reg.blob_served(&format!("sha256:{id}"));
    let pushed: Vec<_> = blobs.iter().map(|id| served(id)).collect();
    image.fetch_chunk_maps_early();
    // The fetches run on threads of their own: wait until the registry served them.
    let t = std::time::Instant::now();
    while blobs.iter().zip(&pushed).any(|(id, p)| served(id).0 == p.0) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "early fetches never came"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let early: Vec<_> = blobs.iter().map(|id| served(id)).collect();
    for (e, p) in early.iter().zip(&pushed) {
        assert_eq!(
            e.0,
            p.0 + 1,
            "one request per blob: {early:?} after {pushed:?}"
        );
    }
    let mut kernel = Kernel::new(&image, &p.dir.join("objects"));
    let want_boot = std::fs::read(&built.bootstrap).unwrap();
    kernel.open(&bootstrap, &bootstrap, want_boot.clone());
    kernel.read_all(&bootstrap);
    for (id, before) in blobs.iter().zip(&early) {
        let want = local_space(&built, id);
        assert_eq!(kernel.open(&bootstrap, id, want.clone()), want.len() as u64);
        assert_eq!(
            served(id),
            *before,
            "the open of blob {id} asked the registry again"
        );
        let got = std::fs::read(kernel.read_all(id)).unwrap();
        assert!(got == want, "blob {id} reads as the local one");
    }
    assert_eq!(kernel.wrong_writes(), 0);
    assert_eq!(kernel.session.stats().read_errors, 0);
}

/// A Nydus image pushed as `serving:nydus` behind a fault proxy that answers every request
/// 200 ms late (so the bootstrap layer is still on the wire when the kernel is played).
fn pushed_nydus_behind_a_slow_proxy(
    name: &str,
) -> Option<(Pushed, oci_images::NydusImage, FaultProxy)> {
    let mut built = None;
    let p = push(name, "nydus", |layout, tree, dir| {
        let i =
            oci_images::nydus_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("nydus", &i.image.manifest);
        built = Some(i);
    })?;
    let proxy = FaultProxy::in_front_of(&p.reg);
    proxy.set_latency(Duration::from_millis(200));
    Some((p, built.unwrap(), proxy))
}

/// `RemoteImage::start_resolve` (the mount started once the manifest is in): the kernel's
/// OPEN of the bootstrap, sent while its layer is still being fetched, waits for it and
/// gets its size; the blobs' chunk maps were fetched before the bootstrap was served (one
/// request each, the blobs' opens ask nothing more); every object reads as the local one,
/// and `finish` gives the image `resolve` gives.
#[test]
fn a_bootstrap_opened_while_it_is_fetched_is_served_once_in() {
    let Some((p, built, proxy)) = pushed_nydus_behind_a_slow_proxy("registry_serving/pending")
    else {
        return;
    };
    let r: Reference = proxy.reference("serving:nydus").parse().unwrap();
    let served = |id: &str| p.reg.blob_served(&format!("sha256:{id}"));
    let pushed: Vec<_> = built.blob_ids.iter().map(|id| served(id)).collect();
    let options = ResolveOptions::default().with_chunk_maps_early(true);
    let resolving = RemoteImage::start_resolve(&client(3), &r, options).unwrap();
    assert!(resolving.is_nydus());
    let keys: Vec<String> = resolving
        .mount_keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    let [bootstrap] = &keys[..] else {
        panic!("one key to mount, got {keys:?}");
    };
    let mut kernel = Kernel::serving(
        Session::new(resolving.server())
            .with_readahead(1 << 20)
            .with_sequential_ahead(0),
        &p.dir.join("objects"),
    );
    let want_boot = std::fs::read(&built.bootstrap).unwrap();
    let t = std::time::Instant::now();
    let size = kernel.open(bootstrap, bootstrap, want_boot.clone());
    let waited = t.elapsed();
    assert_eq!(size, want_boot.len() as u64);
    // Its fetch (one request, 200 ms late) had not answered when the OPEN came.
    assert!(
        waited >= Duration::from_millis(100),
        "the OPEN waited for the bootstrap: {waited:?}"
    );
    kernel.read_all(bootstrap);
    for (id, before) in built.blob_ids.iter().zip(&pushed) {
        // Its chunk map is asked for without the blob's OPEN.
        while served(id).0 == before.0 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "blob {id}: no early fetch of its chunk map"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let want = local_space(&built, id);
        assert_eq!(kernel.open(bootstrap, id, want.clone()), want.len() as u64);
        assert_eq!(
            served(id).0,
            before.0 + 1,
            "blob {id}: its chunk map fetched early, once, and its open asked nothing more"
        );
        let got = std::fs::read(kernel.read_all(id)).unwrap();
        assert!(got == want, "blob {id} reads as the local one");
    }
    assert_eq!(kernel.wrong_writes(), 0);
    assert_eq!(kernel.session.stats().read_errors, 0);
    let image = resolving.finish().unwrap();
    assert_eq!(
        image.kind,
        ImageKind::Nydus {
            bootstrap: bootstrap.clone(),
            blobs: built.blob_ids.clone(),
        }
    );
    assert!(image.file_map(Default::default()).is_some());
}

/// A bootstrap layer whose fetch fails after the kernel's OPEN of it came (every attempt
/// answered 503): the OPEN is refused (the kernel's mount fails, it does not hang) and
/// `finish` gives the registry's typed error.
#[test]
fn a_bootstrap_whose_fetch_fails_refuses_the_open_and_finish_says_why() {
    let Some((p, built, proxy)) = pushed_nydus_behind_a_slow_proxy("registry_serving/failing")
    else {
        return;
    };
    let boot = built
        .image
        .layers
        .iter()
        .find(|l| {
            l.annotations
                .contains_key(ondemand::registry::NYDUS_BOOTSTRAP)
        })
        .expect("a bootstrap layer")
        .digest
        .clone();
    proxy.inject_always(
        Match::Blob(boot.clone()),
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    let r: Reference = proxy.reference("serving:nydus").parse().unwrap();
    let resolving = RemoteImage::start_resolve(&client(2), &r, ResolveOptions::default()).unwrap();
    let key = resolving.mount_keys()[0].to_string();
    assert_eq!(format!("sha256:{key}"), boot);
    let mut kernel = Kernel::serving(Session::new(resolving.server()), &p.dir.join("objects"));
    let t = std::time::Instant::now();
    let opened = kernel.try_open(&key, &key, Vec::new());
    let waited = t.elapsed();
    assert_eq!(
        opened, None,
        "the OPEN of a bootstrap that never came is refused"
    );
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_secs(30),
        "the OPEN waited for the fetch's end, and no longer: {waited:?}"
    );
    let hits = proxy
        .log()
        .iter()
        .filter(|s| s.blob() == Some(boot.as_str()))
        .count();
    assert_eq!(hits, 2, "both attempts were made");
    match resolving.finish() {
        Err(ondemand::registry::ResolveError::Registry(e)) => {
            assert!(e.to_string().contains("503"), "{e}")
        }
        other => panic!("expected the registry's error, got {other:?}"),
    }
    assert_eq!(kernel.wrong_writes(), 0);
}

/// The entrypoint rule (`--predict-entrypoint`): an image whose config says `Cmd: ["prog"]`
/// (a real program, the host's `ls`, with its libraries): resolved with its config, the
/// program, its interpreter and its libraries are found and their chunks fetched into
/// memory before any READ; READs of every byte of them then ask the registry nothing, and
/// write the blob's bytes.
#[test]
fn the_entrypoints_files_are_fetched_before_the_first_read() {
    entrypoint_round(Limits::DEFAULT, true);
}

/// The same with the closure cut to the program alone: the libraries' READs ask the
/// registry (what the test above checks can fail).
#[test]
fn without_the_libraries_their_reads_ask_the_registry() {
    entrypoint_round(
        Limits {
            files: 1,
            ..Limits::DEFAULT
        },
        false,
    );
}

use ondemand::predict::entrypoint::Limits;

/// Push the program image, fetch its entrypoint's files early under `limits`, READ every
/// byte of the program and its libraries; `quiet`: whether those READs asked the registry
/// nothing.
fn entrypoint_round(limits: Limits, quiet: bool) {
    let Some(reg) = Registry::plain(if quiet {
        "registry_serving/entrypoint"
    } else {
        "registry_serving/entrypoint_cut"
    }) else {
        return;
    };
    let dir = reg.dir().to_path_buf();
    let Some(skopeo) = Skopeo::new(&dir.join("skopeo")) else {
        return;
    };
    let src = dir.join("tree");
    let libraries = tests::program_tree::write(&src);
    std::fs::write(src.join("other"), tests::text(4, 3 << 20)).unwrap();
    let layout = OciLayout::create(&dir.join("layout")).with_cmd(&["prog"]);
    let built = oci_images::nydus_image(&layout, &[&src], &Platform::host(), &dir.join("work"))
        .expect("nydus-image");
    layout.tag("nydus", &built.image.manifest);
    skopeo.push(layout.dir(), "nydus", &reg, "serving:nydus");
    let r: Reference = reg.reference("serving:nydus").parse().unwrap();
    let image = RemoteImage::resolve_with(&client(3), &r, true).unwrap();
    assert_eq!(image.run_config().unwrap().unwrap().program(), Some("prog"));
    let ImageKind::Nydus { bootstrap, blobs } = image.kind.clone() else {
        panic!("a Nydus image, got {:?}", image.kind);
    };
    let id = blobs[0].clone();
    image.fetch_chunk_maps_early();
    let files = image
        .fetch_entrypoint_early(limits, 64 << 20, 3, 0)
        .expect("an entrypoint to fetch")
        .join()
        .unwrap();
    // The program and every library (the interpreter is one of them).
    let want_files = if quiet { libraries.len() + 1 } else { 1 };
    assert_eq!(files, want_files, "{libraries:?}");
    // The early fetches run on threads of their own: wait until the registry is quiet.
    let served = || reg.blob_served(&format!("sha256:{id}"));
    let mut before = served();
    let t = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = served();
        if now == before {
            break;
        }
        before = now;
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "early fetches never ended"
        );
    }
    // No readahead: each READ asks for its file's blocks only.
    let mut kernel = Kernel::with(&image, &dir.join("objects"), 0, true);
    kernel.open(
        &bootstrap,
        &bootstrap,
        std::fs::read(&built.bootstrap).unwrap(),
    );
    kernel.read_all(&bootstrap);
    let want = local_space(&built, &id);
    kernel.open(&bootstrap, &id, want.clone());
    let boot = erofs_reader::Image::open(&built.bootstrap).unwrap();
    let mut paths = vec!["/bin/prog".to_owned()];
    paths.extend(
        libraries
            .iter()
            .map(|l| format!("/{}/{l}", tests::program_tree::LIBDIR)),
    );
    for path in &paths {
        let inode = boot.lookup(path).unwrap();
        let len = inode.metadata().len();
        for e in boot.extents(&inode, 0..len).unwrap() {
            let erofs_reader::ExtentTarget::Device { offset, .. } = e.target else {
                panic!("{path}: not on the blob");
            };
            let start = offset / 4096 * 4096;
            let end = (offset + e.len).next_multiple_of(4096);
            kernel.read(&id, start, end - start);
        }
    }
    assert_eq!(
        served() == before,
        quiet,
        "READs of the entrypoint's files: {:?} requests and bytes before, {:?} after",
        before,
        served()
    );
    assert_eq!(kernel.wrong_writes(), 0);
    assert_eq!(kernel.session.stats().read_errors, 0);
    // Without asking for the config: nothing to do.
    assert!(
        resolve(&reg.reference("serving:nydus"), 3)
            .fetch_entrypoint_early(limits, 64 << 20, 3, 0)
            .is_none()
    );
}

#[test]
fn nydus_image_served_from_the_registry_mounts_as_the_tree() {
    nydus_round_trip("registry_serving/nydus", false);
}

#[test]
fn nydus_zran_image_served_from_the_original_targz_layer() {
    nydus_round_trip("registry_serving/zran", true);
}

/// Record and replay from a registry: a run that reads a few scattered ranges of a Nydus
/// image records them (`Recorder`); a second run on fresh caches, with a fresh client,
/// prefetches the trace (`PrefetchConfig::with_trace`, two threads, through the registry
/// store's batched range reads), after which the same READs fetch nothing, every byte
/// written is right, and the registry served no more requests than for the recording run,
/// and no more bytes than it and the gaps the batches merged (under the merge gap each).
#[test]
fn a_trace_recorded_from_a_registry_image_replays_as_prefetch() {
    let mut built = None;
    let Some(p) = push("registry_serving/trace", "nydus", |layout, tree, dir| {
        let i =
            oci_images::nydus_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("nydus", &i.image.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let reference = p.reg.reference("serving:nydus");
    let want_boot = std::fs::read(&built.bootstrap).unwrap();
    let wants: Vec<(String, Vec<u8>)> = built
        .blob_ids
        .iter()
        .map(|id| (id.clone(), local_space(&built, id)))
        .collect();
    // The reads of a "container start": the bootstrap's head, then three places per blob.
    let reads = |kernel: &mut Kernel, boot: &str| {
        kernel.read(boot, 0, 8192);
        for (id, want) in &wants {
            let size = want.len() as u64;
            assert!(size > 4096, "blob {id}: {size} bytes");
            kernel.read(id, 0, 4096);
            kernel.read(id, (size / 2) / 4096 * 4096, 16384);
            kernel.read(id, (size - 1) / 4096 * 4096, 4096);
        }
    };
    let open_all = |kernel: &mut Kernel, boot: &str| {
        kernel.open(boot, boot, want_boot.clone());
        for (id, want) in &wants {
            kernel.open(boot, id, want.clone());
        }
    };

    // 1. Record, without readahead (every read is a miss).
    let image = resolve(&reference, 3);
    let ImageKind::Nydus { bootstrap, .. } = image.kind.clone() else {
        panic!("a Nydus image, got {:?}", image.kind);
    };
    let trace_path = p.dir.join("trace");
    let recorder = Arc::new(ondemand::Recorder::create(&trace_path).unwrap());
    let mut rec = Kernel::serving(
        Session::new(image.server().with_verify_digests(true))
            .with_readahead(0)
            .with_sequential_ahead(0)
            .with_recorder(Arc::clone(&recorder)),
        &p.dir.join("rec"),
    );
    open_all(&mut rec, &bootstrap);
    reads(&mut rec, &bootstrap);
    recorder.flush().unwrap();
    assert_eq!(rec.wrong_writes(), 0);
    let rec_stats = rec.session.stats();
    let rec_registry = image.store().client().stats();
    let trace = ondemand::AccessTrace::read(&trace_path).unwrap();
    assert_eq!(trace.skipped(), 0);
    // Keyed by the bootstrap layer's digest and the blob ids: the same on any cold run.
    let mut keys: Vec<&[u8]> = vec![bootstrap.as_bytes()];
    keys.extend(wants.iter().map(|(id, _)| id.as_bytes()));
    assert_eq!(trace.keys(), keys);
    // At least one range per object; overlapping reads (a small blob) recorded once.
    assert!(trace.entries().len() > wants.len(), "{}", trace.to_text());

    // 2. Replay on fresh caches with a fresh client.
    let image = resolve(&reference, 3);
    let config = ondemand::PrefetchConfig::listed_only()
        .with_trace(&trace)
        .with_threads(2);
    let mut rep = Kernel::serving(
        Session::new(image.server().with_verify_digests(true))
            .with_readahead(0)
            .with_sequential_ahead(0)
            .with_prefetch(config),
        &p.dir.join("rep"),
    );
    open_all(&mut rep, &bootstrap);
    let stop = ondemand::Shutdown::new();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| rep.session.prefetch_worker(&stop));
        }
        let t = std::time::Instant::now();
        while !(rep.session.prefetch_idle() && rep.session.prefetch_pending_bytes() == 0) {
            assert!(t.elapsed() < Duration::from_secs(60), "prefetch hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.trigger();
    });
    let prefetched = rep.session.stats();
    assert_eq!(prefetched.prefetch_errors, 0, "{prefetched:?}");
    assert_eq!(prefetched.prefetched_bytes, rec_stats.fetched_bytes);
    reads(&mut rep, &bootstrap);
    let st = rep.session.stats();
    assert_eq!(st.fetched_bytes, 0, "no fill on the read path: {st:?}");
    assert_eq!(st.read_errors, 0);
    assert_eq!(rep.wrong_writes(), 0);
    let rep_registry = image.store().client().stats();
    eprintln!(
        "record: {} requests, {} bytes from the registry; replay (prefetch of {} ranges, {} bytes): {} requests, {} bytes",
        rec_registry.requests,
        rec_registry.bytes,
        trace.entries().len(),
        trace.bytes(),
        rep_registry.requests,
        rep_registry.bytes
    );
    // A prefetch job is one batch: the registry store merges the chunks of its ranges that
    // lie closer than the merge gap into one request, fetching the gap too (each merge saves
    // a request and costs less than the gap); nothing is fetched twice.
    let merge_gap = image.store().client().config().merge_gap;
    assert!(
        rep_registry.requests <= rec_registry.requests,
        "replay sends no more requests"
    );
    assert!(
        rep_registry.bytes
            <= rec_registry.bytes + (rec_registry.requests - rep_registry.requests) * merge_gap,
        "replay fetches no more than the recording run and the merged gaps"
    );

    // 3. The same replay with the trace's stored chunks fetched early
    // (`RemoteImage::fetch_trace_early`, no gap), as `serve --image` does while the image
    // mounts: once they are registered, the blobs' opens, the prefetch and the reads ask the
    // registry nothing more than the chunk maps and those ranges, one request each, and
    // every byte written is right.
    let image = resolve(&reference, 3);
    let before = image.store().client().stats();
    image.fetch_chunk_maps_early();
    let ranges: usize = image
        .fetch_trace_early(&trace, 0, 2, 0)
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert!(ranges >= wants.len(), "{ranges} early ranges");
    let mut early = Kernel::serving(
        Session::new(image.server().with_verify_digests(true))
            .with_readahead(0)
            .with_sequential_ahead(0)
            .with_prefetch(
                ondemand::PrefetchConfig::listed_only()
                    .with_trace(&trace)
                    .with_threads(2),
            ),
        &p.dir.join("early"),
    );
    open_all(&mut early, &bootstrap);
    let stop = ondemand::Shutdown::new();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| early.session.prefetch_worker(&stop));
        }
        let t = std::time::Instant::now();
        while !(early.session.prefetch_idle() && early.session.prefetch_pending_bytes() == 0) {
            assert!(t.elapsed() < Duration::from_secs(60), "prefetch hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.trigger();
    });
    let st = early.session.stats();
    assert_eq!(st.prefetch_errors, 0, "{st:?}");
    assert_eq!(st.prefetched_bytes, rec_stats.fetched_bytes);
    reads(&mut early, &bootstrap);
    let st = early.session.stats();
    assert_eq!(st.fetched_bytes, 0, "no fill on the read path: {st:?}");
    assert_eq!(st.read_errors, 0);
    assert_eq!(early.wrong_writes(), 0);
    let after = image.store().client().stats();
    eprintln!(
        "replay with the trace fetched early: {} requests ({ranges} early ranges), {} bytes",
        after.requests - before.requests,
        after.bytes - before.bytes
    );
    assert_eq!(
        after.requests - before.requests,
        (wants.len() + ranges) as u64,
        "one request per chunk map and per early range, nothing else"
    );
}

/// `RemoteImage::warm_connections(n)`: the warm-up's `n` one-byte range requests run at
/// once, and leave `n` connections idle in the client's pool, so that `n` reads at once
/// afterwards open none (counted by the fault proxy's accepted connections, with 100 ms
/// before each answer so that parallel requests overlap); the same reads by a client
/// without the warm-up open new ones.
#[test]
fn warmed_connections_serve_parallel_reads_without_opening_new_ones() {
    let Some(p) = push("registry_serving/warm", "erofs", |layout, tree, dir| {
        let i =
            oci_images::erofs_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("erofs", &i.manifest);
    }) else {
        return;
    };
    let proxy = FaultProxy::in_front_of(&p.reg);
    proxy.set_latency(Duration::from_millis(100));
    const N: usize = 5;
    // N one-byte reads at once, at spread offsets (none merge), through the store.
    let parallel_reads = |image: &RemoteImage| {
        let ImageKind::ErofsLayers { layers } = &image.kind else {
            panic!("an EROFS-layer image, got {:?}", image.kind);
        };
        // The largest layer, as the warm-up's.
        let blob = layers
            .iter()
            .map(|l| image.store().open(l.as_bytes()).unwrap())
            .max_by_key(|b| b.size().unwrap())
            .unwrap();
        let size = blob.size().unwrap();
        assert!(size > 2 * N as u64 * (128 << 10), "layer of {size} bytes");
        let mut bytes = [0u8; N];
        let mut reads: Vec<_> = bytes
            .chunks_mut(1)
            .enumerate()
            .map(|(i, buf)| ondemand::RangeRead {
                offset: i as u64 * (size / N as u64) + 3,
                buf,
            })
            .collect();
        blob.read_ranges(&mut reads).unwrap();
    };

    // Without the warm-up: the reads open connections of their own.
    let cold = resolve(&proxy.reference("serving:erofs"), 3);
    let before = proxy.connections();
    parallel_reads(&cold);
    let opened_cold = proxy.connections() - before;
    assert!(
        opened_cold >= 1,
        "{N} reads at once on a cold pool opened no connection"
    );

    let image = resolve(&proxy.reference("serving:erofs"), 3);
    let before = proxy.connections();
    proxy.reset_logs();
    let warmed = image
        .warm_connections(N)
        .expect("a warm-up thread")
        .join()
        .unwrap();
    assert_eq!(warmed.unwrap(), N);
    let log = proxy.log();
    let ranges: Vec<_> = log
        .iter()
        .filter(|s| s.method == "GET" && s.blob().is_some())
        .map(|s| s.range.clone().unwrap_or_default())
        .collect();
    assert_eq!(ranges.len(), N, "one request per connection: {log:?}");
    for r in &ranges {
        let (a, b) = r
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .unwrap_or_else(|| panic!("a range request: {r}"));
        assert_eq!(a, b, "one byte: {r}");
    }
    let opened_warm = proxy.connections() - before;
    assert!(
        opened_warm >= 1 && opened_warm <= N as u64,
        "the warm-up opened {opened_warm} connections for {N} requests"
    );
    let before = proxy.connections();
    parallel_reads(&image);
    assert_eq!(
        proxy.connections() - before,
        0,
        "{N} reads at once after the warm-up opened connections (a cold pool opened {opened_cold})"
    );
}

#[test]
fn faults_are_survived_or_fail_the_read_cleanly() {
    let mut built = None;
    let Some(p) = push("registry_serving/faults", "erofs", |layout, tree, dir| {
        let i =
            oci_images::erofs_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("erofs", &i.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let proxy = FaultProxy::in_front_of(&p.reg);
    let image = resolve(&proxy.reference("serving:erofs"), 3);
    let layer = &built.layers[0];
    let key = layer.hex().to_owned();
    let want = p.layout.read_blob(&layer.digest);
    let mut kernel = Kernel::with(&image, &p.dir.join("objects"), 0, true);
    kernel.open(&key, &key, want.clone());
    let size = want.len() as u64;
    let window = 64u64 << 10;
    assert!(size > 10 * window);
    let mut off = 0;
    let mut read_next = |kernel: &mut Kernel, what: &str| -> bool {
        let errors = kernel.session.stats().read_errors;
        let before = kernel.sink(&key).sink().written.load(Ordering::SeqCst);
        let at = off;
        assert!(at < size);
        kernel.read(&key, at, window.min(size - at).next_multiple_of(4096));
        off += window;
        let ok = kernel.session.stats().read_errors == errors;
        let wrote = kernel.sink(&key).sink().written.load(Ordering::SeqCst) > before;
        assert_eq!(
            ok, wrote,
            "{what}: a failed READ writes nothing, a good one writes"
        );
        assert_eq!(kernel.wrong_writes(), 0, "{what}: no wrong byte");
        ok
    };
    // Survived: retried, or read past.
    for (what, fault) in [
        (
            "503 with Retry-After",
            Fault::Status {
                status: 503,
                retry_after: Some(0),
            },
        ),
        ("connection reset", Fault::Reset),
        ("body cut short", Fault::CutShort { after: 1000 }),
        ("200 for a range request", Fault::IgnoreRange),
        (
            "429",
            Fault::Status {
                status: 429,
                retry_after: None,
            },
        ),
    ] {
        let retries = image.store().client().stats().retries;
        proxy.inject(Match::Blobs, fault, 1);
        assert!(read_next(&mut kernel, what), "{what} is survived");
        assert_eq!(proxy.pending_faults(), 0, "{what} was hit");
        if what != "200 for a range request" {
            assert!(
                image.store().client().stats().retries > retries,
                "{what}: retried"
            );
        }
    }
    // Not survivable: every attempt fails. The READ fails (EIO), nothing is written.
    proxy.inject_always(
        Match::Blobs,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    assert!(!read_next(&mut kernel, "503 forever"));
    proxy.clear_faults();
    proxy.inject_always(Match::Blobs, Fault::CutShort { after: 100 });
    assert!(!read_next(&mut kernel, "every body cut short"));
    proxy.clear_faults();
    // The session keeps serving: the whole object reads back right.
    let file = kernel.read_all(&key);
    assert_eq!(std::fs::read(file).unwrap(), want);
    assert_eq!(kernel.wrong_writes(), 0);
    let stats = kernel.session.stats();
    assert_eq!(stats.read_errors, 2, "{stats:?}");
}

/// A registry (or a man in the middle of plain HTTP) that changes one byte of a blob. A
/// range read cannot be checked against the blob's digest; the bootstrap's chunk digests
/// can, and `RemoteImage::server` checks them by default: the READ fails and nothing is
/// written. With the check off the changed byte reaches the kernel (why it is on).
#[test]
fn a_changed_blob_byte_fails_the_read_by_default() {
    let mut built = None;
    let Some(p) = push("registry_serving/changed", "nydus", |layout, tree, dir| {
        // Chunks stored as they are: a changed byte decodes to a changed byte, where in a
        // compressed chunk it might fail the decoder and hide what the digests do.
        let i = oci_images::nydus_image_with(
            layout,
            &tree.layers(),
            &Platform::host(),
            &dir.join("work"),
            &["--compressor", "none"],
        )
        .unwrap();
        layout.tag("nydus", &i.image.manifest);
        built = Some(i);
    }) else {
        return;
    };
    let built = built.unwrap();
    let proxy = FaultProxy::in_front_of(&p.reg);
    let image = resolve(&proxy.reference("serving:nydus"), 3);
    let ImageKind::Nydus { bootstrap, blobs } = image.kind.clone() else {
        panic!("a Nydus image, got {:?}", image.kind);
    };
    let want_boot = std::fs::read(&built.bootstrap).unwrap();
    let id = &blobs[0];
    let want = local_space(&built, id);
    assert!(image.server().verifies_digests(), "on by default");
    for (name, server, checked) in [
        ("by default", image.server(), true),
        (
            "check off",
            image.server().with_verify_digests(false),
            false,
        ),
    ] {
        let session = Session::new(server)
            .with_readahead(0)
            .with_sequential_ahead(0);
        let mut kernel = Kernel::serving(session, &p.dir.join(name.replace(' ', "-")));
        kernel.open(&bootstrap, &bootstrap, want_boot.clone());
        kernel.open(&bootstrap, id, want.clone());
        // Every blob request from here on gets its body's byte 100 inverted: the READ at
        // 0 asks for the first chunk, stored from the blob's start.
        proxy.inject_always(Match::Blobs, Fault::Flip { at: 100 });
        let served = proxy.log().len();
        kernel.read(id, 0, 64 << 10);
        proxy.clear_faults();
        assert!(proxy.log().len() > served, "{name}: the blob was asked for");
        let errors = kernel.session.stats().read_errors;
        if checked {
            assert_eq!(errors, 1, "{name}: the READ fails");
            assert_eq!(kernel.wrong_writes(), 0, "{name}: no wrong byte written");
        } else {
            assert_eq!(errors, 0, "{name}: the READ succeeds");
            assert!(
                kernel.wrong_writes() > 0,
                "{name}: the changed byte is written"
            );
        }
    }
}

#[test]
fn not_a_lazy_image_is_a_typed_error() {
    let Some(p) = push("registry_serving/targz", "targz", |layout, tree, dir| {
        let i =
            oci_images::targz_image(layout, &tree.layers(), &Platform::host(), &dir.join("work"))
                .unwrap();
        layout.tag("targz", &i.manifest);
    }) else {
        return;
    };
    let r: Reference = p.reg.reference("serving:targz").parse().unwrap();
    match RemoteImage::resolve(&client(1), &r) {
        Err(ondemand::registry::ResolveError::NotLazy { media_types, .. }) => {
            assert_eq!(media_types.len(), 2)
        }
        other => panic!("expected NotLazy, got {other:?}"),
    }
}
