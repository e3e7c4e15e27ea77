//! Nydus RAFS v6 images converted from tar layers by `nydus-image create`:
//!
//! - `-t targz-ref`: the data blob is the original `.tar.gz` (put in the blob directory under
//!   the blob id, its sha256) and a separate meta blob holds the chunk infos, the ZRan
//!   checkpoints into the gzip stream and their 32 KiB dictionaries. `erofs extract
//!   --blob-dir` recreates the tree byte for byte, `erofs fsck --blob-dir` inflates every
//!   chunk and checks every digest, and a few hundred random ranges read through
//!   `erofs_reader::Image` equal the files. The tree has a 5 MiB text file, so the gzip
//!   stream has several ZRan contexts; the host kernel, given the inflated address space as
//!   the blob device, mounts the bootstrap and shows the same tree. A multi-member
//!   `.tar.gz` (two gzip files concatenated, a context running across the member boundary)
//!   reads the same.
//! - damage: a flipped byte in the `.tar.gz` data, a truncated `.tar.gz`, a truncated or
//!   damaged meta blob: fsck fails and reads return errors, never a panic.
//! - `ondemand::rafs::RafsDirServer` serves the targz-ref blob's address space, digests
//!   checked.
//! - `-t targz-rafs` and `-t tar-rafs`: nydus-image re-compresses the layer into an
//!   ordinary blob; the same extract, fsck and range checks hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use erofs_reader::nydus::{BlobCompressor, BlobFeatures, Digester, RafsMeta};
use erofs_reader::{Image, ImageBuilder};
use tests::tree::{self, Compare, Kind, MtimeCheck};

/// A converted layer: its scratch directory, the tree, the bootstrap and the blob directory.
struct Layer {
    dir: PathBuf,
    src: PathBuf,
    boot: PathBuf,
    blobs: PathBuf,
}

/// The test tree: a large compressible text file (several ZRan contexts), a random file,
/// small files in nested directories, an empty file and directory, symlinks, a hard link.
fn make_tree(src: &Path) {
    let d = src.join("a/b/c");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(src.join("a/empty-dir")).unwrap();
    std::fs::write(src.join("big.txt"), tests::text(1, 5 << 20)).unwrap();
    std::fs::write(src.join("random.bin"), tests::Rng(7).bytes(1_500_000)).unwrap();
    std::fs::write(src.join("a/medium.txt"), tests::text(2, 300_000)).unwrap();
    for i in 0..12u64 {
        let n = (i * 997 % 5000) as usize + 1;
        std::fs::write(d.join(format!("small-{i}")), tests::text(10 + i, n)).unwrap();
    }
    std::fs::write(src.join("a/empty"), b"").unwrap();
    std::fs::hard_link(src.join("a/medium.txt"), d.join("medium-link")).unwrap();
    std::os::unix::fs::symlink("b/c/small-3", src.join("a/link")).unwrap();
    std::os::unix::fs::symlink("../nowhere", src.join("a/b/dangling")).unwrap();
}

/// Build the tree, its tarball (`layer.tar`) and `layer.tar.gz`, in a scratch dir.
fn layer_dir(name: &str) -> Option<(tests::Scratch, PathBuf)> {
    tests::require_tool("nydus-image")?;
    tests::require_tool("tar")?;
    tests::require_tool("gzip")?;
    let dir = tests::scratch_dir(&format!("rafs_targz/{name}"));
    let src = dir.join("src");
    make_tree(&src);
    tree::make_tarball(&src, &dir.join("layer.tar"));
    tree::gzip(&dir.join("layer.tar"), &dir.join("layer.tar.gz"));
    Some((dir, src))
}

/// Convert `input` (in `dir`) with `-t kind`; for `targz-ref`, copy the `.tar.gz` into the
/// blob directory under the blob id, which must be its sha256.
fn convert(dir: &Path, src: &Path, kind: &str, input: &Path) -> Layer {
    let blobs = dir.join(format!("blobs-{kind}"));
    let boot = dir.join(format!("boot-{kind}"));
    tests::nydus_image::Create::new(input, &blobs)
        .kind(kind)
        .bootstrap(&boot)
        .run()
        .expect("nydus-image");
    let layer = Layer {
        dir: dir.to_path_buf(),
        src: src.to_path_buf(),
        boot,
        blobs,
    };
    if kind == "targz-ref" {
        let image = ImageBuilder::open(&layer.boot).unwrap().build().unwrap();
        let rafs = RafsMeta::from_image(&image).unwrap().expect("a RAFS image");
        let blob = &rafs.blobs()[0];
        let data = std::fs::read(input).unwrap();
        let sha = erofs_reader::nydus::digest(Some(Digester::Sha256), &data).unwrap();
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(blob.id, hex, "the blob id is the sha256 of the .tar.gz");
        std::fs::copy(input, layer.blobs.join(&blob.id)).unwrap();
    }
    layer
}

/// `erofs ARGS` → (success, stdout + stderr).
fn erofs(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(tree::erofs_cli())
        .args(args)
        .output()
        .expect("run erofs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `erofs fsck BOOT --blob-dir BLOBS` → (success, chunks decoded, digests verified, output).
fn fsck(layer: &Layer) -> (bool, u64, u64, String) {
    let (ok, out) = erofs(&[
        "fsck".as_ref(),
        layer.boot.as_os_str(),
        "--blob-dir".as_ref(),
        layer.blobs.as_os_str(),
    ]);
    let nums: Vec<u64> = out
        .lines()
        .find(|l| l.starts_with("RAFS: "))
        .unwrap_or_else(|| panic!("no RAFS line in fsck output:\n{out}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (ok, nums[0], nums[1], out)
}

fn open(layer: &Layer) -> Image {
    ImageBuilder::open(&layer.boot)
        .unwrap()
        .blob_dir(&layer.blobs)
        .build()
        .unwrap()
}

/// Compare the tree at `got` with the source tree `want`: kinds, modes, owners, sizes,
/// mtimes (seconds), link targets, contents, hard links, xattrs (not the root's metadata).
fn compare_trees(want: &Path, got: &Path) -> Result<(), String> {
    let mut want = tree::snapshot_dir(want);
    let mut got = tree::snapshot_dir(got);
    tree::fill_link_groups(&mut want);
    tree::fill_link_groups(&mut got);
    // nydus-image keeps whole seconds of the tar entries' mtimes.
    let how = Compare {
        root_metadata: false,
        mtime: MtimeCheck::Seconds,
        ..Compare::default()
    };
    tree::compare(&want, &got, &how)
}

/// `erofs extract` equals the tree; fsck decodes and verifies every chunk.
fn extract_and_fsck(layer: &Layer, out: &str) {
    let dest = layer.dir.join(out);
    let (ok, msg) = erofs(&[
        "extract".as_ref(),
        layer.boot.as_os_str(),
        "--blob-dir".as_ref(),
        layer.blobs.as_os_str(),
        dest.as_os_str(),
    ]);
    assert!(ok, "erofs extract failed: {msg}");
    if let Err(d) = compare_trees(&layer.src, &dest) {
        panic!(
            "{} extracted differs from the tree:\n{d}",
            layer.boot.display()
        );
    }
    let (ok, decoded, verified, msg) = fsck(layer);
    assert!(ok, "fsck: {msg}");
    let image = open(layer);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let chunks: u64 = rafs.blobs().iter().map(|b| u64::from(b.chunk_count)).sum();
    assert_eq!(decoded, chunks, "every chunk decoded: {msg}");
    assert_eq!(verified, decoded, "every digest checked: {msg}");
}

/// `n` random ranges of the tree's regular files read through `Image::read_at` equal
/// the files (deterministic: [`tests::Rng`]).
fn random_ranges(layer: &Layer, n: usize) {
    let image = open(layer);
    let files: Vec<(PathBuf, Vec<u8>)> = tree::snapshot_dir(&layer.src)
        .into_iter()
        .filter(|(_, e)| e.kind == Kind::File)
        .map(|(p, _)| {
            let data = std::fs::read(layer.src.join(&p)).unwrap();
            (Path::new("/").join(p), data)
        })
        .collect();
    assert!(files.len() > 10);
    let mut rng = tests::Rng(0x7A6_2A11);
    for _ in 0..n {
        let (path, data) = &files[(rng.next() % files.len() as u64) as usize];
        let size = data.len() as u64;
        let off = rng.next() % (size + 1);
        let len = match rng.next() % 4 {
            0 => rng.next() % 64,
            1 => rng.next() % 8192,
            2 => rng.next() % (1 << 20),
            _ => rng.next() % (3 << 20),
        };
        let mut buf = vec![0u8; len as usize];
        let got = image
            .read_at(path.as_path(), off, &mut buf)
            .unwrap_or_else(|e| panic!("{} at {off}+{len}: {e}", path.display()));
        let end = (off + len).min(size) as usize;
        assert_eq!(got, end - off as usize, "{} at {off}+{len}", path.display());
        assert!(
            buf[..got] == data[off as usize..end],
            "{} at {off}+{len} differs",
            path.display()
        );
    }
}

/// The host kernel, given `space` (the blob's uncompressed address space as this reader
/// inflates it) as the bootstrap's extra device, mounts the bootstrap and shows the tree.
fn kernel_reads_the_space(layer: &Layer, space: &[u8]) {
    if tests::require_root("mounting the bootstrap with the host kernel").is_none() {
        return;
    }
    let dev = layer.dir.join("space.img");
    std::fs::write(&dev, space).unwrap();
    let mount = tree::KernelMount::new(&layer.boot, std::slice::from_ref(&dev));
    if let Err(d) = compare_trees(&layer.src, mount.path()) {
        panic!("the kernel's view differs from the tree:\n{d}");
    }
}

#[test]
fn targz_ref_reads_back() {
    let Some((dir, src)) = layer_dir("ref") else {
        return;
    };
    let layer = convert(&dir, &src, "targz-ref", &dir.join("layer.tar.gz"));
    let image = open(&layer);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    assert_eq!(rafs.blobs().len(), 1);
    let blob = &rafs.blobs()[0];
    assert_eq!(blob.compressor, Some(BlobCompressor::Gzip));
    assert!(
        blob.features
            .contains(BlobFeatures::ZRAN | BlobFeatures::SEPARATE | BlobFeatures::CHUNK_INFO_V2),
        "{:?}",
        blob.features
    );
    extract_and_fsck(&layer, "out");
    random_ranges(&layer, 300);

    // Several ZRan contexts, every one used by some chunk; reading the whole blob inflates
    // each exactly once (chunks in order, contexts cached).
    let src = rafs.open_blob(&image, 0, &layer.blobs, true).unwrap();
    let chunks = src.chunk_infos().unwrap().to_vec();
    let contexts = src.zran_contexts().unwrap().to_vec();
    assert!(contexts.len() >= 3, "{} ZRan contexts", contexts.len());
    let mut used: Vec<u32> = chunks.iter().map(|c| c.zran.unwrap().0).collect();
    used.dedup();
    assert_eq!(used, (0..contexts.len() as u32).collect::<Vec<_>>());
    // Contexts follow each other in both streams.
    for w in contexts.windows(2) {
        assert!(w[0].in_offset.get() < w[1].in_offset.get());
        assert!(w[0].out_offset.get() < w[1].out_offset.get());
    }
    let mut all = vec![0u8; src.uncompressed_size() as usize];
    erofs_reader::Source::read_exact_at(&src, &mut all, 0).unwrap();
    let s = src.stats();
    assert_eq!(s.zran_inflates, contexts.len() as u64, "{s:?}");
    kernel_reads_the_space(&layer, &all);
    assert_eq!(s.chunks_verified, chunks.len() as u64, "{s:?}");
    println!(
        "targz-ref: {} chunks, {} ZRan contexts, {} gzip bytes read, whole blob in {:.1} ms \
         inflating",
        chunks.len(),
        contexts.len(),
        s.stored_bytes,
        s.decode_ns as f64 / 1e6
    );
    // One chunk from a cold source: one context fetched and inflated, one digest.
    let cold = rafs.open_blob(&image, 0, &layer.blobs, true).unwrap();
    // The largest chunk (1 MiB of big.txt).
    let mid = (0..chunks.len())
        .max_by_key(|&k| chunks[k].uncompressed_size)
        .unwrap();
    let t0 = std::time::Instant::now();
    let (data, checked) = cold.decode_chunk(mid as u32).unwrap();
    let took = t0.elapsed();
    assert!(checked);
    let c = &chunks[mid];
    let at = c.uncompressed_offset as usize;
    assert_eq!(&data[..], &all[at..at + c.uncompressed_size as usize]);
    let s = cold.stats();
    assert_eq!((s.zran_inflates, s.fetches), (1, 1), "{s:?}");
    println!(
        "one chunk ({} bytes) cold: {:.1} ms ({} gzip bytes fetched, {:.1} ms inflate + sha256)",
        c.uncompressed_size,
        took.as_secs_f64() * 1e3,
        s.stored_bytes,
        s.decode_ns as f64 / 1e6
    );
    // The stored range a server must fetch for a chunk is its context's gzip input.
    let r = cold
        .stored_range(c.uncompressed_offset..c.uncompressed_offset + 1)
        .unwrap()
        .unwrap();
    assert_eq!(r.end - r.start, s.stored_bytes);
}

#[test]
fn targz_ref_multi_member_gzip() {
    let Some((dir, src)) = layer_dir("multi") else {
        return;
    };
    // Two gzip members, cut inside big.txt's data.
    let tar = std::fs::read(dir.join("layer.tar")).unwrap();
    let cut = tar.len() / 2 + 12_345;
    std::fs::write(dir.join("p1"), &tar[..cut]).unwrap();
    std::fs::write(dir.join("p2"), &tar[cut..]).unwrap();
    tree::gzip(&dir.join("p1"), &dir.join("p1.gz"));
    tree::gzip(&dir.join("p2"), &dir.join("p2.gz"));
    let mut gz = std::fs::read(dir.join("p1.gz")).unwrap();
    gz.extend(std::fs::read(dir.join("p2.gz")).unwrap());
    let member_end = std::fs::metadata(dir.join("p1.gz")).unwrap().len();
    let input = dir.join("multi.tar.gz");
    std::fs::write(&input, gz).unwrap();
    let layer = convert(&dir, &src, "targz-ref", &input);
    // Some ZRan context runs across the member boundary (in both streams).
    let image = open(&layer);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let blob = rafs.open_blob(&image, 0, &layer.blobs, false).unwrap();
    let across = blob.zran_contexts().unwrap().iter().any(|c| {
        let out = c.out_offset.get()..c.out_offset.get() + u64::from(c.out_len.get());
        c.input_range().unwrap().contains(&member_end) && out.contains(&(cut as u64))
    });
    assert!(across, "no ZRan context spans the gzip member boundary");
    extract_and_fsck(&layer, "out");
    random_ranges(&layer, 100);
}

/// A copy of `layer`'s blob directory in `name`, with `damage` applied to the file that
/// `pick` chooses (by name).
fn damaged(
    layer: &Layer,
    name: &str,
    pick: &dyn Fn(&str) -> bool,
    damage: &dyn Fn(&mut Vec<u8>),
) -> Layer {
    let blobs = layer.dir.join(name);
    let _ = std::fs::remove_dir_all(&blobs);
    std::fs::create_dir_all(&blobs).unwrap();
    let mut hit = 0;
    for e in std::fs::read_dir(&layer.blobs).unwrap() {
        let e = e.unwrap();
        let fname = e.file_name().into_string().unwrap();
        let mut data = std::fs::read(e.path()).unwrap();
        if pick(&fname) {
            damage(&mut data);
            hit += 1;
        }
        std::fs::write(blobs.join(&fname), data).unwrap();
    }
    assert_eq!(hit, 1, "one file damaged");
    Layer {
        dir: layer.dir.clone(),
        src: layer.src.clone(),
        boot: layer.boot.clone(),
        blobs,
    }
}

/// Read every file of `layer` through the library with digest-checking blob sources: no
/// panic, no read that succeeds with wrong bytes; the number of reads that failed.
fn failed_reads(layer: &Layer) -> usize {
    let plain = open(layer);
    let rafs = RafsMeta::from_image(&plain).unwrap().unwrap();
    let mut b = ImageBuilder::open(&layer.boot).unwrap();
    for i in 0..rafs.blobs().len() as u32 {
        b = b.device(rafs.open_blob(&plain, i, &layer.blobs, true).unwrap());
    }
    let image = b.build().unwrap();
    let mut failed = 0;
    for (p, e) in tree::snapshot_dir(&layer.src) {
        if e.kind != Kind::File {
            continue;
        }
        match image.read(Path::new("/").join(&p)) {
            Ok(data) => assert!(
                data == std::fs::read(layer.src.join(&p)).unwrap(),
                "{}: wrong bytes read without an error",
                p.display()
            ),
            Err(_) => failed += 1,
        }
    }
    failed
}

/// A change to a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn targz_ref_damage_is_an_error() {
    let Some((dir, src)) = layer_dir("damage") else {
        return;
    };
    let layer = convert(&dir, &src, "targz-ref", &dir.join("layer.tar.gz"));
    let image = open(&layer);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let blob = rafs.blobs()[0].clone();
    let meta = blob.separate_meta_name().expect("a separate meta blob");
    let chunks = rafs
        .open_blob(&image, 0, &layer.blobs, false)
        .unwrap()
        .chunk_infos()
        .unwrap()
        .to_vec();
    let is_data = |n: &str| n == blob.id;
    let is_meta = |n: &str| n == meta;
    // A flipped byte inside each of a few chunks' own gzip bytes.
    for (k, c) in chunks.iter().enumerate().step_by(2) {
        let at = (c.compressed_offset + u64::from(c.compressed_size) / 2) as usize;
        let bad = damaged(&layer, &format!("flip-{k}"), &is_data, &|d| d[at] ^= 0x10);
        let (ok, _, _, out) = fsck(&bad);
        assert!(!ok, "fsck passes with a flipped byte in chunk {k}:\n{out}");
        assert!(out.contains("digest") || out.contains("ZRan"), "{out}");
        assert!(failed_reads(&bad) > 0, "chunk {k}");
    }
    // A truncated .tar.gz.
    let bad = damaged(&layer, "short-data", &is_data, &|d| {
        d.truncate(d.len() * 2 / 3)
    });
    assert!(!fsck(&bad).0);
    assert!(failed_reads(&bad) > 0);
    // The meta blob: truncated at several places, or a flipped byte in its compressed chunk
    // infos (and ZRan tables) or its header.
    let meta_len = std::fs::metadata(layer.blobs.join(&meta)).unwrap().len() as usize;
    let mut cases: Vec<(String, Damage)> = Vec::new();
    for keep in [0, 100, meta_len / 2, meta_len - 4097, meta_len - 1] {
        cases.push((
            format!("meta-cut-{keep}"),
            Box::new(move |d| d.truncate(keep)),
        ));
    }
    for at in [
        3,
        meta_len - 4096 + 0x28,
        meta_len - 4096 + 0x38,
        meta_len - 2,
    ] {
        cases.push((format!("meta-flip-{at}"), Box::new(move |d| d[at] ^= 0x41)));
    }
    for (name, damage) in &cases {
        let bad = damaged(&layer, name, &is_meta, damage.as_ref());
        let (ok, _, _, out) = fsck(&bad);
        assert!(!ok, "{name}: fsck passes:\n{out}");
        assert!(failed_reads(&bad) > 0, "{name}");
    }
    // Flips inside the compressed array (chunk infos, ZRan contexts and their 32 KiB
    // windows, one zstd frame). Most of it is window bytes, and a window byte that no
    // back-reference uses changes no file byte: such a flip may pass, and where it lands
    // depends on the tarball's mtimes. What must hold everywhere: no wrong byte is read, and
    // fsck's verdict is the reads' verdict.
    let array = meta_len - 4096;
    for k in 1..8 {
        let at = array * k / 8;
        let name = format!("meta-array-flip-{at}");
        let bad = damaged(&layer, &name, &is_meta, &|d| d[at] ^= 0x41);
        let (ok, chunks_ok, digests, out) = fsck(&bad);
        let failed = failed_reads(&bad);
        if ok {
            assert_eq!(failed, 0, "{name}: fsck passes, reads fail:\n{out}");
            let n = chunks.len() as u64;
            assert_eq!((chunks_ok, digests), (n, n), "{name}:\n{out}");
        } else {
            assert!(
                failed > 0,
                "{name}: fsck fails, every read succeeds:\n{out}"
            );
        }
    }
}

/// `-t targz-rafs` (from the `.tar.gz`) and `-t tar-rafs` (from the `.tar`): ordinary
/// re-compressed blobs.
#[test]
fn targz_rafs_and_tar_rafs_read_back() {
    let Some((dir, src)) = layer_dir("rafs") else {
        return;
    };
    for (kind, input) in [("targz-rafs", "layer.tar.gz"), ("tar-rafs", "layer.tar")] {
        let layer = convert(&dir, &src, kind, &dir.join(input));
        let image = open(&layer);
        let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
        for b in rafs.blobs() {
            assert!(!b.features.contains(BlobFeatures::ZRAN), "{kind}: {b:?}");
        }
        extract_and_fsck(&layer, &format!("out-{kind}"));
        random_ranges(&layer, 150);
    }
}

/// `ondemand::rafs::RafsDirServer` serves a targz-ref blob (the `.tar.gz` and its meta blob
/// in the directory, beside the bootstrap) as the kernel would read it: its uncompressed
/// address space, every chunk's digest checked.
#[test]
fn targz_ref_served_on_demand() {
    use ondemand::rafs::RafsDirServer;
    use ondemand::{ObjectKey, OnDemandServer};

    let Some((dir, src)) = layer_dir("serve") else {
        return;
    };
    let layer = convert(&dir, &src, "targz-ref", &dir.join("layer.tar.gz"));
    std::fs::copy(&layer.boot, layer.blobs.join("bootstrap")).unwrap();
    let image = open(&layer);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let want = rafs.open_blob(&image, 0, &layer.blobs, false).unwrap();
    let mut space = vec![0u8; want.uncompressed_size() as usize];
    erofs_reader::Source::read_exact_at(&want, &mut space, 0).unwrap();

    let server = RafsDirServer::new(&layer.blobs).with_verify_digests(true);
    let id = rafs.blobs()[0].id.as_bytes();
    let key = ObjectKey {
        volume_key: b"erofs,test",
        cookie_key: id,
    };
    let opened = server.open(&key).expect("open the blob");
    assert_eq!(opened.size, space.len() as u64);
    let mut got = vec![0u8; space.len()];
    for (i, piece) in got.chunks_mut(128 * 1024).enumerate() {
        server
            .fill(&opened.object, (i * 128 * 1024) as u64, piece)
            .expect("fill");
    }
    server.close(&opened.object);
    assert!(
        got == space,
        "served bytes differ from the blob's address space"
    );
    let (_, s) = server
        .blob_stats()
        .into_iter()
        .find(|(name, _)| name.as_bytes() == id)
        .expect("stats of the blob");
    assert!(
        s.chunks_decoded > 0 && s.chunks_verified == s.chunks_decoded,
        "{s:?}"
    );
    assert_eq!(
        s.zran_inflates,
        want.zran_contexts().unwrap().len() as u64,
        "each ZRan context inflated once: {s:?}"
    );
}
