//! Nydus RAFS v6 images served to the real Linux 6.12 kernel in the test VM by
//! `erofs-ondemand serve --blob-dir DIR` (which finds the bootstraps in DIR and serves each
//! blob's uncompressed address space, decompressing chunks on demand: `ondemand::rafs`).
//!
//! - `serve_rafs_images`: images built by nydus-image with each compressor (none, lz4_block,
//!   zstd), chunk sizes 0x1000, 0x10000 and 0x100000, both digesters, a blob ToC, a prefetch
//!   table, a `targz-ref` image (the `.tar.gz` itself as the blob, inflated from its ZRan
//!   contexts), and an upper layer sharing the lower layer's blob (`--parent-bootstrap`), mounted
//!   with `mount -t erofs none -o fsid=BOOTSTRAP /mnt/X` and read back equal to the host trees
//!   (contents, modes, owners, types), with every chunk digest checked by the daemon
//!   (`--verify-digests`); and a `--blob-inline-meta` blob mounted with `fsid=BLOB_ID` (the
//!   daemon serves the bootstrap inlined in the blob, then the blob under the placeholder tag).
//! - `figures_zstd_vs_file_backed`: a cold read of a whole tree from a zstd RAFS image
//!   through the daemon against the same tree built uncompressed by mkfs.erofs and mounted
//!   file-backed, in the same VM run; and the stored blob bytes the daemon fetched against
//!   the bytes the workload read.
//!
//! Trees here are dense (no holes, no all-zero blocks): the 6.12 kernel zero-fills the rest of
//! a fscache read after a hole (`../shared/vm/README.md`), which no daemon can fix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::vm::{Kernel, VmRun, busybox, dense_tree, manifests, noise};
use tests::{require_tool, run, scratch_dir};

fn daemon() -> PathBuf {
    tests::vm::static_binary("ondemand", "erofs-ondemand", &["cli"])
}

/// `nydus-image create -t dir-rafs -v 6 ARGS -D blobs -B blobs/FSID tree` (the bootstrap
/// sits beside the blobs, named by the fsid it is mounted with).
fn nydus(blobs: &Path, fsid: &str, tree: &Path, args: &[&str], prefetch: &str) {
    let mut create = tests::nydus_image::Create::new(tree, blobs)
        .bootstrap(&blobs.join(fsid))
        .args(args);
    if !prefetch.is_empty() {
        create = create.prefetch(prefetch);
    }
    create.run().expect("nydus-image");
}

use tests::vm::DAEMON_PRELUDE as PRELUDE;

const SERVE_SCRIPT: &str = r#"
mkdir -p /data/cache
start_daemon /tmp/d.log rafs --cache-dir /data/cache --verify-digests || exit 1
for f in rzstd rlz4 rnone rtoc rtgz; do
    od_mount $f /mnt/$f
    verify_tree $f /mnt/$f
done
# The upper layer: its own tree, the lower layer's blob shared.
od_mount rupper /mnt/rupper
check rupper-sums sh -c "cd /mnt/rupper && sha256sum -c /vmtest/upper.sums"
(cd /mnt/rupper && find . | sort | while IFS= read -r f; do stat -c '%n %a %u:%g %F' "$f"; done) >/tmp/upper.stats
check rupper-stats cmp /tmp/upper.stats /vmtest/upper.stats
check blob-opens-logged grep -q "RAFS blob .*: serving [0-9]* uncompressed bytes" "$DLOG"
# A --blob-inline-meta blob mounted by its id: the bootstrap comes out of the blob, whose
# device tag is the placeholder "x" * 64.
IL=$(cat /vmtest/inline.name)
od_mount $IL /mnt/inline
verify_tree inline /mnt/inline
check inline-bootstrap-logged grep -q "serving the bootstrap inlined in the blob" "$DLOG"
for m in rzstd rlz4 rnone rtoc rtgz rupper inline; do umount /mnt/$m; done
stop_daemon daemon-exit
data summary "$(grep '^erofs-ondemand: opens=' /tmp/d.log)"
data rafs "$(grep '^erofs-ondemand: rafs ' /tmp/d.log)"
"#;

/// A `targz-ref` image of `tree` (nydus-image 2.2: the layer's `.tar.gz` stays the data
/// blob, named by its sha256, and a separate blob meta with ZRan inflate contexts is written
/// beside it): the bootstrap as `blobs/FSID`.
fn targz_ref(dir: &Path, blobs: &Path, fsid: &str, tree: &Path) {
    let tgz = dir.join(format!("{fsid}.tar.gz"));
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' --sort=name --numeric-owner -cf - . | gzip -n -6 >'{}'",
        tree.display(),
        tgz.display()
    )));
    tests::nydus_image::Create::new(&tgz, blobs)
        .kind("targz-ref")
        .bootstrap(&blobs.join(fsid))
        .run()
        .expect("nydus-image");
    let sum = run(Command::new("sha256sum").arg(&tgz));
    let id = sum.split_whitespace().next().expect("sha256sum output");
    std::fs::copy(&tgz, blobs.join(id)).expect("copy the data blob");
}

/// The second tree: the first plus a new file and a changed one (nothing deleted, so the
/// upper layer's merged view is exactly this tree).
fn upper_tree(lower: &Path, upper: &Path) {
    run(Command::new("cp").arg("-a").arg(lower).arg(upper));
    std::fs::write(upper.join("new-file"), noise(77, 333_333)).expect("write");
    std::fs::write(upper.join("text/big.txt"), b"changed in the upper layer\n").expect("write");
}

#[test]
fn serve_rafs_images() {
    let (Some(_), Some(busybox)) = (require_tool("nydus-image"), busybox()) else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_rafs/serve");
    let tree = dir.join("tree");
    dense_tree(&tree);
    let upper = dir.join("upper-tree");
    upper_tree(&tree, &upper);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let n = |fsid, args: &[&str], prefetch| nydus(&blobs, fsid, &tree, args, prefetch);
    n(
        "rzstd",
        &["--compressor", "zstd", "--chunk-size", "0x100000"],
        "/sizes\n/text/big.txt\n",
    );
    n(
        "rlz4",
        &[
            "--compressor",
            "lz4_block",
            "--chunk-size",
            "0x10000",
            "--digester",
            "sha256",
        ],
        "",
    );
    n(
        "rnone",
        &["--compressor", "none", "--chunk-size", "0x1000"],
        "",
    );
    n(
        "rtoc",
        &[
            "--compressor",
            "zstd",
            "--chunk-size",
            "0x10000",
            "--digester",
            "sha256",
            "--features",
            "blob-toc",
        ],
        "",
    );
    let lower = blobs.join("rzstd");
    nydus(
        &blobs,
        "rupper",
        &upper,
        &[
            "--compressor",
            "zstd",
            "--chunk-size",
            "0x100000",
            "--parent-bootstrap",
            lower.to_str().expect("utf-8 path"),
        ],
        "",
    );
    let up = manifests(&busybox, &upper);
    // --blob-inline-meta writes no bootstrap file: build into a directory of its own, then
    // move the blob (named by its id) beside the others.
    let inline_dir = dir.join("inline");
    std::fs::create_dir_all(&inline_dir).expect("mkdir");
    tests::nydus_image::Create::new(&tree, &inline_dir)
        .args(&["--compressor", "lz4_block", "--chunk-size", "0x10000"])
        .args(&["--blob-inline-meta"])
        .run()
        .expect("nydus-image");
    let inline_blob = std::fs::read_dir(&inline_dir)
        .expect("inline dir")
        .next()
        .expect("one blob")
        .expect("entry")
        .file_name()
        .into_string()
        .expect("utf-8 name");
    std::fs::rename(inline_dir.join(&inline_blob), blobs.join(&inline_blob)).expect("move");
    targz_ref(&dir, &blobs, "rtgz", &tree);

    let Some(out) = VmRun::new("rafs-serve")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .manifests(&manifests(&busybox, &tree))
        .bytes("vmtest/upper.sums", up.sums.as_bytes(), 0o644)
        .bytes("vmtest/upper.stats", up.stats.as_bytes(), 0o644)
        .bytes("vmtest/inline.name", inline_blob.as_bytes(), 0o644)
        .script(&format!("{PRELUDE}{SERVE_SCRIPT}"))
        .timeout(Duration::from_secs(400))
        .run()
    else {
        return;
    };
    let mut expected = vec!["daemon-rafs".to_string()];
    for f in ["rzstd", "rlz4", "rnone", "rtoc", "rtgz"] {
        expected.push(format!("mount-{f}"));
        expected.push(format!("{f}-sums"));
        expected.push(format!("{f}-stats"));
    }
    expected.push(format!("mount-{inline_blob}"));
    for c in [
        "inline-sums",
        "inline-stats",
        "inline-bootstrap-logged",
        "mount-rupper",
        "rupper-sums",
        "rupper-stats",
        "blob-opens-logged",
        "daemon-exit",
    ] {
        expected.push(c.to_string());
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    let rafs = out.data("rafs").unwrap_or_default().to_string();
    let field = |k: &str| -> u64 {
        rafs.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {rafs:?}"))
    };
    // Seven images, seven blobs (the upper layer shares the lower one's and adds one): every
    // decoded chunk was checked, and the targz-ref blob was inflated from its ZRan contexts.
    assert!(field("blobs") >= 7, "{rafs}");
    assert!(field("zran_inflates") > 0, "{rafs}");
    assert!(field("chunks_decoded") > 0, "{rafs}");
    assert_eq!(field("chunks_verified"), field("chunks_decoded"), "{rafs}");
    println!(
        "vm_rafs serve_rafs_images: {} checks passed, VM {:.1?} ({})",
        out.passed.len(),
        out.elapsed,
        out.accel
    );
    println!("  daemon: {}", out.data("summary").unwrap_or("?"));
    println!("  {rafs}");
}

/// The start of the figures script: helpers and the file-backed mount. The runs follow,
/// generated by [`figures_script`].
const FIGURES_HEAD: &str = r#"
mkdir -p /data/cache /mnt/fb
# od_run KEY FSID ARGS...: a fresh daemon (so nothing is decoded yet) with ARGS, a mount of
# FSID (a volume the cache has never seen), the metadata walked, caches dropped, then one
# cold read of the whole tree; the daemon's summaries as DATA KEY_summary and KEY_rafs.
od_run() {
    _k=$1
    _f=$2
    shift 2
    start_daemon /tmp/$_k.log $_k --cache-dir /data/cache "$@" || return 1
    od_mount $_f /mnt/$_f
    ls -lR /mnt/$_f >/dev/null
    drop_caches
    read_tree $_k /mnt/$_f
    check $_k-sums sh -c "cd /mnt/$_f && sha256sum -c /vmtest/sums"
    umount /mnt/$_f
    stop_daemon daemon-exit-$_k
    data ${_k}_summary "$(grep '^erofs-ondemand: opens=' /tmp/$_k.log)"
    data ${_k}_rafs "$(grep '^erofs-ondemand: rafs ' /tmp/$_k.log)"
}
check mount-file-backed vmtool mount erofs $B/plain.erofs /mnt/fb
ls -lR /mnt/fb >/dev/null
"#;

/// One way of serving the bench image in [`figures_zstd_vs_file_backed`].
struct Variant {
    /// DATA key prefix.
    key: String,
    /// The bootstrap it mounts a copy of: `bench` (zstd) or `benchnone` (uncompressed).
    image: &'static str,
    /// `erofs-ondemand serve` arguments.
    args: String,
    /// Measured in each of the three rounds (best of three), or once.
    rounds: bool,
    /// What the line says.
    what: String,
}

impl Variant {
    fn new(key: &str, image: &'static str, args: &str, rounds: bool, what: &str) -> Self {
        Variant {
            key: key.into(),
            image,
            args: args.into(),
            rounds,
            what: what.into(),
        }
    }

    /// The run keys and the fsids they mount.
    fn runs(&self) -> Vec<(String, String)> {
        if self.rounds {
            (1..=3)
                .map(|r| {
                    (
                        format!("{}_{r}", self.key),
                        format!("{}_{}_{r}", self.image, self.key),
                    )
                })
                .collect()
        } else {
            vec![(self.key.clone(), format!("{}_{}", self.image, self.key))]
        }
    }
}

/// The variants measured: the defaults (the target), the defaults without the fill ahead of
/// sequential readers, `--prefetch`, and the uncompressed image; or, for tuning, those named
/// in `EROFS_VM_RAFS_VARIANTS` (`KEY=ARGS;KEY=ARGS...`, each on the zstd image, three rounds).
fn variants() -> Vec<Variant> {
    if let Ok(list) = std::env::var("EROFS_VM_RAFS_VARIANTS") {
        return list
            .split(';')
            .filter(|v| !v.trim().is_empty())
            .map(|v| {
                let (k, args) = v.split_once('=').unwrap_or((v, ""));
                Variant::new(
                    k.trim(),
                    "bench",
                    args.trim(),
                    true,
                    &format!("zstd RAFS, {v}"),
                )
            })
            .collect();
    }
    vec![
        Variant::new(
            "def",
            "bench",
            "",
            true,
            "zstd RAFS through erofs-ondemand, defaults",
        ),
        Variant::new(
            "seq0",
            "bench",
            "--sequential-ahead 0",
            true,
            "zstd RAFS, defaults but --sequential-ahead 0 (one upcall per 1 MiB window)",
        ),
        Variant::new(
            "pf",
            "bench",
            "--prefetch",
            false,
            "zstd RAFS, --prefetch (whole blob fetched in the background)",
        ),
        Variant::new(
            "none",
            "benchnone",
            "",
            false,
            "uncompressed RAFS (--compressor none), defaults",
        ),
    ]
}

/// Three rounds of the file-backed read and each repeated variant, alternating (the host is
/// shared, so one sample of each is noise; the best of three is compared), then the single
/// runs.
fn figures_script(variants: &[Variant]) -> String {
    let mut script = String::from(FIGURES_HEAD);
    for r in 1..=3 {
        script.push_str(&format!("drop_caches\nread_tree fb_{r} /mnt/fb\n"));
        for v in variants.iter().filter(|v| v.rounds) {
            let (k, f) = &v.runs()[r - 1];
            script.push_str(&format!("od_run {k} {f} {}\n", v.args));
        }
    }
    for v in variants.iter().filter(|v| !v.rounds) {
        let (k, f) = &v.runs()[0];
        script.push_str(&format!("od_run {k} {f} {}\n", v.args));
    }
    script.push_str(
        "check fb-sums sh -c \"cd /mnt/fb && sha256sum -c /vmtest/sums\"\numount /mnt/fb\n",
    );
    script
}

#[test]
fn figures_zstd_vs_file_backed() {
    let (Some(_), Some(mkfs_erofs), Some(busybox)) = (
        require_tool("nydus-image"),
        require_tool("mkfs.erofs"),
        busybox(),
    ) else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_rafs/figures");
    let tree = dir.join("tree");
    tests::vm::bench_tree(&tree);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    nydus(&blobs, "bench", &tree, &["--compressor", "zstd"], "");
    nydus(&blobs, "benchnone", &tree, &["--compressor", "none"], "");
    run(Command::new(&mkfs_erofs)
        .arg("--quiet")
        .arg("-b4096")
        .arg(blobs.join("plain.erofs"))
        .arg(&tree));
    let variants = variants();
    for v in &variants {
        for (_, fsid) in v.runs() {
            std::fs::copy(blobs.join(v.image), blobs.join(fsid)).expect("copy bootstrap");
        }
    }
    let zstd_blob = {
        let image = erofs_reader::Image::open(blobs.join("bench")).expect("bootstrap");
        let rafs = erofs_reader::nydus::RafsMeta::from_image(&image)
            .expect("RAFS")
            .expect("RAFS");
        rafs.blobs()[0].clone()
    };
    let Some(out) = VmRun::new("rafs-figures")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .disk_size(1 << 30)
        .manifests(&manifests(&busybox, &tree))
        .script(&format!("{PRELUDE}{}", figures_script(&variants)))
        .timeout(Duration::from_secs(600))
        .run()
    else {
        return;
    };
    let mut expected = vec!["mount-file-backed".to_string(), "fb-sums".to_string()];
    for v in &variants {
        for (k, f) in v.runs() {
            expected.extend([
                format!("daemon-{k}"),
                format!("mount-{f}"),
                format!("{k}-sums"),
                format!("daemon-exit-{k}"),
            ]);
        }
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    out.assert_passed(&expected);
    // `k=N` from a daemon summary line.
    let field = |line: Option<&str>, run: &str, k: &str| -> u64 {
        let line = line.unwrap_or_default();
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {run}: {line:?}"))
    };
    let rafs = |run: &str, k: &str| field(out.data(&format!("{run}_rafs")), run, k);
    let summary = |run: &str, k: &str| field(out.data(&format!("{run}_summary")), run, k);
    let read = out.data_u64("fb_1_bytes");
    let ns = |k: &str| out.data_u64(&format!("{k}_ns")) as f64;
    let mib_s = |ns: f64| read as f64 / (1 << 20) as f64 / (ns / 1e9);
    let best = tests::vm::best;
    let show = |v: &[f64]| {
        v.iter()
            .map(|&n| format!("{:.0}", mib_s(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "vm_rafs figures ({} guest, VM {:.1?}, host load {}): cold read of a 48 MiB tree (65 files, {read} bytes; log text that zstd shrinks ~2.5:1, half the small files random)",
        out.accel,
        out.elapsed,
        tests::vm::host_load()
    );
    let fb: Vec<f64> = (1..=3).map(|r| ns(&format!("fb_{r}"))).collect();
    println!(
        "  uncompressed mkfs.erofs image, file-backed: {} MiB/s (best {:.0})",
        show(&fb),
        mib_s(best(&fb))
    );
    for v in &variants {
        let runs = v.runs();
        let samples: Vec<f64> = runs.iter().map(|(k, _)| ns(k)).collect();
        for (k, _) in &runs {
            assert_eq!(out.data_u64(&format!("{k}_bytes")), read, "{k}");
        }
        let (first, _) = &runs[0];
        println!(
            "  {}: {} MiB/s (best {:.0}): {:.2}x the file-backed read ({}); READ upcalls {}, filled ahead {} MiB; fetched {} stored bytes, decode {} ms",
            v.what,
            show(&samples),
            mib_s(best(&samples)),
            best(&fb) / best(&samples),
            if v.rounds {
                "best against best"
            } else {
                "one run against the best"
            },
            summary(first, "reads"),
            summary(first, "ahead_bytes") >> 20,
            rafs(first, "stored_bytes"),
            rafs(first, "decode_ms"),
        );
        // One cold pass fetches each stored chunk byte once: no more than the blob holds.
        if v.image == "bench" {
            for (k, _) in &runs {
                assert!(rafs(k, "stored_bytes") <= zstd_blob.compressed_size, "{k}");
                assert!(rafs(k, "chunks_decoded") > 0, "{k}");
            }
        }
    }
    let first = &variants[0].runs()[0].0;
    let stored = rafs(first, "stored_bytes");
    println!(
        "  bytes: the zstd blob stores {} bytes for {} uncompressed; the cold read of {read} bytes made the daemon fetch {stored} stored bytes ({:.2} per byte read) and serve {} uncompressed bytes to the kernel",
        zstd_blob.compressed_size,
        zstd_blob.uncompressed_size,
        stored as f64 / read as f64,
        rafs(first, "bytes_served"),
    );
}
