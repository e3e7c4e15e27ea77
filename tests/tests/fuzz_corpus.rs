//! Replays the committed fuzz corpus on stable: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through the same target body that
//! `cargo +nightly fuzz run <target>` runs (the bodies live in `fuzz/src/lib.rs`, compiled
//! here as a module). A panic, or a file that takes more than a few seconds, fails the test
//! and names the file.

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One input may take this long (debug build, whole-image walks included).
const PER_INPUT: Duration = Duration::from_secs(20);

fn fuzz_dir() -> PathBuf {
    tests::workspace_root().join("fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(sub).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd {
            let p = e.expect("corpus entry").path();
            if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Run `body` over every input of `target` on a worker thread; fail with the names of the
/// inputs that panicked or timed out.
fn replay(target: &str) {
    let body = bodies::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"))
        .1;
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target}/ is empty: run fuzz/make-seeds.sh"
    );
    let mut failures = Vec::new();
    let start = Instant::now();
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        let (tx, rx) = mpsc::channel();
        let name = file.display().to_string();
        let worker = std::thread::Builder::new()
            .name(format!("{target}:{name}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(|| body(&data));
                let _ = tx.send(r.is_ok());
            })
            .expect("spawn");
        match rx.recv_timeout(PER_INPUT) {
            Ok(true) => {
                worker.join().expect("worker");
            }
            Ok(false) => failures.push(format!("{name}: panicked (see above)")),
            Err(_) => {
                failures.push(format!("{name}: still running after {PER_INPUT:?}"));
                // The thread is left behind; the test fails anyway.
            }
        }
    }
    eprintln!(
        "{target}: {} inputs replayed in {:?}",
        files.len(),
        start.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every target has a replay test, and every replay test a target.
        #[test]
        fn every_target_is_replayed() {
            let mut tested = vec![$(stringify!($name)),*];
            let mut targets: Vec<&str> = bodies::TARGETS.iter().map(|(n, _)| *n).collect();
            tested.sort_unstable();
            targets.sort_unstable();
            assert_eq!(tested, targets);
            for t in targets {
                let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{t}.rs"));
                assert!(wrapper.is_file(), "{} is missing", wrapper.display());
            }
        }
    };
}

replay_tests!(
    superblock,
    inode,
    dirent,
    xattr,
    chunk,
    device,
    compress,
    rafs,
    rafs_blob,
    image,
    image_mutate,
    cachefiles_request,
    cachefiles_command,
    ondemand_session,
    fanotify_events,
    registry_headers,
    registry_token,
    registry_manifest,
    access_trace,
    elf_needed,
    image_config,
);

/// The seed images the structured targets start from are real images the reader opens.
#[test]
fn seed_images_open() {
    for (name, bytes) in bodies::SEED_IMAGES {
        let image = erofs_reader::Image::from_source(bytes.to_vec())
            .unwrap_or_else(|e| panic!("seed image {name}: {e}"));
        assert!(image.read_dir("/").expect("root").count() > 3, "{name}");
    }
    assert!(!bodies::SEED_BLOB.is_empty());
    // Every committed seed image (built by fuzz/make-seeds.sh) opens, reads back what the
    // script wrote, and survives the fuzz walk.
    let dir = tests::workspace_root().join("tests/data/seeds");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("tests/data/seeds") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "erofs") {
            let mut builder = erofs_reader::ImageBuilder::open(&p).expect("open");
            let blob = p.with_extension("blob");
            if blob.exists() {
                builder = builder.device_file(&blob).expect("blob");
            }
            let image = builder
                .build()
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            // The files make-seeds.sh wrote read back exactly (mkfs.erofs is the truth).
            let blocks: Vec<u8> = (0..3000)
                .flat_map(|i| format!("{i:08}\n").into_bytes())
                .collect();
            for (path, want) in [
                ("/hello.txt", b"hello, erofs\n".to_vec()),
                ("/dir/tail", vec![b'a'; 9000]),
                ("/dir/sub/blocks", blocks),
                ("/dir/sub/up", b"hello, erofs\n".to_vec()),
            ] {
                let got = image
                    .read(path)
                    .unwrap_or_else(|e| panic!("{}: {path}: {e}", p.display()));
                assert!(got == want, "{}: {path} differs", p.display());
            }
            bodies::walk(&image);
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} seed images in {}", dir.display());
}

/// The `rafs_blob` seeds are real blobs in the input layout the target splits: splitting and
/// joining gives the same bytes, and the seeds cover a separate meta (targz-ref) and the
/// compressors.
#[test]
fn rafs_blob_seeds_split_and_join() {
    let mut kinds = std::collections::BTreeSet::new();
    // The seeds make_corpus wrote (fuzzer-found inputs may set other flag bits).
    for file in inputs("rafs_blob").iter().filter(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
    }) {
        let data = std::fs::read(file).expect("read");
        let Some(bodies::RafsBlobInput {
            record,
            meta,
            stored,
            ..
        }) = bodies::split_rafs_blob(&data)
        else {
            continue;
        };
        assert_eq!(
            bodies::join_rafs_blob(&record, meta, stored),
            data,
            "{}",
            file.display()
        );
        kinds.insert((format!("{:?}", record.compressor()), meta.is_some()));
        // And a seed is a blob that decodes whole, so the fuzzer starts past the checks.
        let mut src = erofs_reader::nydus::BlobSource::new(stored.to_vec(), &record);
        if let Some(m) = meta {
            src = src.with_separate_meta(m.to_vec());
        }
        let mut all = vec![0u8; src.uncompressed_size() as usize];
        erofs_reader::Source::read_exact_at(&src, &mut all, 0)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    assert!(kinds.len() >= 4, "seed kinds: {kinds:?}");
}
