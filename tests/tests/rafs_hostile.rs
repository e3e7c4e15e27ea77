//! Damaged Nydus images never make the RAFS code panic or hang: a real image (bootstrap +
//! zstd blob) with random bytes flipped in the RAFS parts of the bootstrap (extended
//! superblock, blob table, prefetch table, chunk table) and in the blob (chunk data, chunk-info
//! array, blob meta header) is opened with its blob directory, walked and read in full, fsck'd
//! chunk by chunk (`RafsMeta::verify_blobs`) and served by `RafsDirServer`; every failure must
//! be an error value.

use erofs_reader::nydus::RafsMeta;
use erofs_reader::{Image, ImageBuilder};
use ondemand::rafs::RafsDirServer;
use ondemand::{ObjectKey, OnDemandServer};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Walk and read everything, ignoring errors; returns how many files read fully.
fn walk(image: &Image) -> usize {
    let mut ok = 0;
    let mut stack = vec![("/".to_string(), 0)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = image.read_dir(&dir) else {
            continue;
        };
        for e in rd {
            seen += 1;
            if seen > 10_000 {
                return ok;
            }
            let Ok(e) = e else { break };
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            if e.file_type() == erofs_reader::FileType::Directory {
                if depth < 16 {
                    stack.push((path, depth + 1));
                }
            } else if image.read(&path).is_ok() {
                ok += 1;
            }
        }
    }
    ok
}

#[test]
fn damaged_bootstraps_and_blobs_are_errors_not_panics() {
    let dir = tests::scratch_dir("rafs_hostile");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.bin"), tests::vm::noise(1, 300_000)).unwrap();
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(src.join("d/text"), text).unwrap();
    std::fs::write(src.join("small"), b"small").unwrap();
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    let Some(_) = tests::nydus_image::Create::new(&src, &good)
        .bootstrap(&good.join("boot"))
        .args(&["--compressor", "zstd", "--chunk-size", "0x10000"])
        .prefetch("/d\n/a.bin\n")
        .run()
    else {
        return;
    };
    let boot = std::fs::read(good.join("boot")).unwrap();
    let image = ImageBuilder::open(good.join("boot"))
        .unwrap()
        .blob_dir(&good)
        .build()
        .unwrap();
    assert_eq!(walk(&image), 3);
    let rafs = RafsMeta::from_image(&image).unwrap().unwrap();
    let id = rafs.blobs()[0].id.clone();
    let blob = std::fs::read(good.join(&id)).unwrap();
    let ext = rafs.ext_superblock();
    // Where to flip: the RAFS parts of the bootstrap, and the blob's tail (meta) or data.
    let boot_regions = [
        (0x480u64, 0x100u64),
        (ext.s_blob_table_offset.get(), 256),
        (
            ext.s_prefetch_table_offset.get(),
            u64::from(ext.s_prefetch_table_size.get()).max(4),
        ),
        (
            ext.s_chunk_table_offset.get(),
            ext.s_chunk_table_size.get().max(80),
        ),
    ];
    let meta_start = rafs.blobs()[0].record.ci_offset.get();
    let blob_regions = [
        (0u64, meta_start),
        (meta_start, blob.len() as u64 - meta_start),
    ];

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let (mut opened, mut errors) = (0, 0);
    for round in 0..240 {
        let mut b = boot.clone();
        let mut d = blob.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            if round % 2 == 0 {
                let (off, len) = boot_regions[rng.below(4) as usize];
                let at = (off + rng.below(len)) as usize;
                if at < b.len() {
                    b[at] ^= 1 << rng.below(8);
                }
            } else {
                let (off, len) = blob_regions[rng.below(2) as usize];
                let at = (off + rng.below(len)) as usize;
                if at < d.len() {
                    d[at] ^= 1 << rng.below(8);
                }
            }
        }
        std::fs::write(bad.join("boot"), &b).unwrap();
        std::fs::write(bad.join(&id), &d).unwrap();
        match ImageBuilder::open(bad.join("boot"))
            .unwrap()
            .blob_dir(&bad)
            .build()
        {
            Ok(image) => {
                opened += 1;
                walk(&image);
                if let Ok(Some(r)) = RafsMeta::from_image(&image) {
                    let report = r.verify_blobs(&image, &bad);
                    errors += report.errors.len();
                    let _ = r.prefetch_paths(&image, 10_000);
                    let _ = r.describe(&image);
                }
            }
            Err(_) => errors += 1,
        }
        // The daemon's view: bootstrap and blob objects, every byte.
        let server = RafsDirServer::new(&bad).with_verify_digests(round % 3 == 0);
        for cookie in [b"boot".as_slice(), id.as_bytes()] {
            let key = ObjectKey {
                volume_key: b"erofs,boot",
                cookie_key: cookie,
            };
            if let Ok(o) = server.open(&key) {
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < o.size.min(64 << 20) {
                    match server.read_at(&o.object, off, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => off += n as u64,
                    }
                }
            }
        }
    }
    println!("240 damaged variants: {opened} opened, {errors} errors reported, no panic");
    assert!(opened > 0 && errors > 0);
}
