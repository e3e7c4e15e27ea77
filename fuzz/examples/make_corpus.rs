//! Cut the per-target seed corpora out of the real images built by `fuzz/make-seeds.sh`,
//! and write the protocol vectors.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --no-default-features --example make_corpus
//! -- tests/data/seeds fuzz/corpus`
//!
//! Each seed is named after its content hash, as libFuzzer names corpus files, so re-runs
//! add nothing that is already there.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use cachefiles_proto::{
    CloseRequest, Command, Errno, MsgId, ObjectId, OpenReply, OpenRequest, ReadRequest, Request,
};
use erofs_format::SUPERBLOCK_OFFSET;
use erofs_format::inode::{DataLayout, InodeContext};
use erofs_format::superblock::SuperBlock;
use erofs_reader::{FileType, Image, Inode};

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [seeds, corpus] = &args[..] else {
        eprintln!("usage: make_corpus SEED_DIR CORPUS_DIR");
        std::process::exit(2);
    };
    let mut out = Corpus {
        dir: corpus.clone(),
        written: 0,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(seeds)
        .expect("seed dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for path in &names {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "nydus") {
                nydus_blobs(&mut out, path);
            }
            continue;
        }
        let bytes = std::fs::read(path).expect("read seed");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".erofs") || name.ends_with(".boot") {
            out.add("image", &bytes);
            out.add("superblock", &bytes[..bytes.len().min(4096)]);
            if name.ends_with(".boot") {
                out.add("rafs", &bytes[..bytes.len().min(8192)]);
            }
            records(&mut out, &bytes, path);
        } else if name.ends_with("blob-tail.bin") {
            out.add("rafs", &bytes);
            // The blob meta header is the last 4 KiB of the blob.
            out.add("rafs", &bytes[bytes.len().saturating_sub(4096)..]);
        }
    }
    for i in 0..=(erofs_fuzz::SEED_IMAGES.len() as u8) {
        out.add("image_mutate", &[i]);
        // Seed i with fixed checksum and the seed blob as the extra device.
        out.add("image_mutate", &[i, 0, 1, 1, 0]);
    }
    protocol(&mut out);
    eprintln!("wrote {} new seeds under {}", out.written, corpus.display());
}

/// `rafs_blob` seeds: every blob of every bootstrap under `dir/KIND/boot`, with its stored
/// bytes and (for blobs with separate meta, e.g. targz-ref) the meta file beside it.
fn nydus_blobs(out: &mut Corpus, dir: &Path) {
    let mut kinds: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("nydus seed dir")
        .map(|e| e.expect("entry").path())
        .collect();
    kinds.sort();
    for kind in kinds {
        let boot = std::fs::read(kind.join("boot")).expect("boot");
        let image = Image::from_source(boot.clone()).expect("bootstrap opens");
        let meta = erofs_reader::nydus::RafsMeta::from_image(&image)
            .expect("RAFS")
            .expect("a RAFS v6 bootstrap");
        let ext = erofs_format::rafs::RafsV6SuperBlockExt::from_bootstrap(&boot).expect("ext");
        let records = ext.blob_table(&boot).expect("blob table");
        for (info, record) in meta.blobs().iter().zip(records) {
            let stored = std::fs::read(kind.join(&info.id)).expect("data blob");
            let separate = info
                .separate_meta_name()
                .map(|n| std::fs::read(kind.join(n)).expect("separate blob meta"));
            out.add(
                "rafs_blob",
                &erofs_fuzz::join_rafs_blob(record, separate.as_deref(), &stored),
            );
        }
    }
}

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    fn add(&mut self, target: &str, data: &[u8]) {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        let p = dir.join(format!("seed-{:016x}", fnv(data)));
        if !p.exists() {
            std::fs::write(&p, data).expect("write seed");
            self.written += 1;
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Every inode of an image, by walking its directories.
fn inodes(image: &Image) -> Vec<Inode> {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([image.root_nid()]);
    let mut out = Vec::new();
    seen.insert(image.root_nid());
    while let Some(nid) = queue.pop_front() {
        let Ok(inode) = image.inode(nid) else {
            continue;
        };
        if inode.metadata().is_dir()
            && let Ok(rd) = image.read_dir_inode(&inode)
        {
            for e in rd.flatten() {
                if seen.insert(e.nid()) {
                    queue.push_back(e.nid());
                }
            }
        }
        out.push(inode);
    }
    out
}

/// Record-level seeds: inodes, directory blocks, xattr areas, chunk tables, the device
/// table, compressed maps.
fn records(out: &mut Corpus, bytes: &[u8], path: &Path) {
    let Ok(sb) = SuperBlock::parse(bytes) else {
        return;
    };
    let sb = *sb;
    let bits = sb.blkszbits;
    let bs = 1usize << bits;
    let Ok(ctx) = InodeContext::new(&sb) else {
        return;
    };
    let Ok(image) = Image::from_source(bytes.to_vec()) else {
        eprintln!(
            "{}: the reader does not open it; superblock seeds only",
            path.display()
        );
        return;
    };
    if sb.extra_devices() > 0 {
        let off = sb.device_table_offset() as usize;
        let n = usize::from(sb.extra_devices()) * 128;
        if let Some(t) = bytes.get(off..off + n) {
            let mut seed = vec![sb.extra_devices() as u8];
            seed.extend_from_slice(t);
            out.add("device", &seed);
        }
    }
    let sel = (bits - 9) | 4;
    for inode in inodes(&image) {
        let raw = *inode.metadata().raw();
        let Ok(loc) = ctx.nid_offset(inode.nid()) else {
            continue;
        };
        let loc = loc as usize;
        let isize = raw.inode_size() as usize;
        let xsize = raw.xattr_size() as usize;
        let end = (loc + isize + xsize + 256).min(bytes.len());
        let mut seed = vec![sel];
        seed.extend_from_slice(&bytes[loc..end]);
        out.add("inode", &seed);
        if xsize > 0 {
            let mut seed = vec![sb.xattr_prefix_count];
            seed.extend_from_slice(&bytes[loc + isize..loc + isize + xsize]);
            out.add("xattr", &seed);
        }
        if let Ok(Some((off, format, count))) = raw.chunk_table() {
            let off = off as usize;
            let len = (count as usize * format.entry_size()).min(4096);
            let mut seed = format.0.to_le_bytes().to_vec();
            seed.push(bits - 9);
            seed.extend_from_slice(&raw.size.to_le_bytes());
            seed.extend_from_slice(&bytes[off..(off + len).min(bytes.len())]);
            out.add("chunk", &seed);
        }
        if raw.layout.is_compressed() {
            let header = (loc + isize + xsize).next_multiple_of(8);
            let compact = raw.layout == DataLayout::CompressedCompact;
            let mut seed = vec![u8::from(compact) | ((bits - 9) << 1) | 8];
            seed.extend_from_slice(&raw.size.to_le_bytes());
            seed.extend_from_slice(&bytes[header..(header + 8 + 1024).min(bytes.len())]);
            out.add("compress", &seed);
        }
        if inode.metadata().file_type() == FileType::Directory
            && let Ok(data) = image.read_inode(&inode)
        {
            for block in data.chunks(bs) {
                out.add("dirent", block);
            }
        }
    }
    // The compression configs follow the superblock.
    let start = SUPERBLOCK_OFFSET as usize + sb.sb_size();
    if let Some(algs) = sb.available_compr_algs() {
        // The compress target parses the records after its 17-byte prefix with the
        // selector byte as the algorithm bitmap.
        let mut seed = vec![algs as u8 & 0x1f];
        seed.extend_from_slice(&[0; 16]);
        seed.extend_from_slice(&bytes[start..(start + 64).min(bytes.len())]);
        out.add("compress", &seed);
    }
}

/// Protocol vectors: what the kernel sends (OPEN, READ, CLOSE) and the daemon writes.
fn protocol(out: &mut Corpus) {
    let reqs = [
        Request::Open(OpenRequest {
            msg_id: MsgId(1),
            object_id: ObjectId(1),
            volume_key: b"erofs,abc",
            cookie_key: b"abc",
            fd: 9,
            flags: 0,
        }),
        Request::Open(OpenRequest {
            msg_id: MsgId(2),
            object_id: ObjectId(2),
            volume_key: b"erofs,domain",
            cookie_key: b"blob0",
            fd: 10,
            flags: 0,
        }),
        Request::Read(ReadRequest {
            msg_id: MsgId(3),
            object_id: ObjectId(1),
            off: 0,
            len: 4096,
        }),
        Request::Read(ReadRequest {
            msg_id: MsgId(4),
            object_id: ObjectId(2),
            off: 1 << 20,
            len: 1 << 20,
        }),
        Request::Close(CloseRequest {
            msg_id: MsgId(5),
            object_id: ObjectId(1),
        }),
    ];
    for r in &reqs {
        let mut buf = vec![0u8; r.encoded_len()];
        let n = r.encode(&mut buf).expect("encode");
        out.add("cachefiles_request", &buf[..n]);
    }
    let cmds = [
        Command::Dir(b"/var/cache/erofs"),
        Command::Tag(b"images"),
        Command::Secctx(b"system_u:system_r:cachefiles_kernel_t:s0"),
        Command::Bind { ondemand: true },
        Command::Bind { ondemand: false },
        Command::Copen {
            msg_id: MsgId(7),
            reply: OpenReply::Size(1 << 20),
        },
        Command::Copen {
            msg_id: MsgId(8),
            reply: OpenReply::Error(Errno::ENOENT),
        },
        Command::Restore,
        Command::Cull(b"object"),
        Command::Inuse(b"object"),
        Command::Brun(10),
        Command::Bcull(7),
        Command::Bstop(3),
        Command::Frun(10),
        Command::Fcull(7),
        Command::Fstop(3),
        Command::Debug(0x7),
    ];
    for c in &cmds {
        let mut buf = vec![0u8; c.encoded_len()];
        let n = c.encode(&mut buf).expect("encode");
        out.add("cachefiles_command", &buf[..n]);
    }
    for raw in [
        &b"copen 1,-2\n"[..],
        b"bind   ondemand",
        b"cull a b",
        b"debug 0x10",
    ] {
        out.add("cachefiles_command", raw);
    }
    // Session inputs: arbitrary-decoded, so any bytes are a valid start; these lead with
    // one or two blobs and a handful of ops.
    out.add("ondemand_session", &[1, 0, 0, 1, 0, 8, 0, 4, 0, 0]);
    let mut s = vec![2u8, 0, 0, 0, 16, 0, 0, 0, 32, 0, 16, 0, 0];
    for r in &reqs {
        let mut buf = vec![0u8; r.encoded_len()];
        let n = r.encode(&mut buf).expect("encode");
        s.push(3); // SessionOp::Raw
        s.push(n as u8);
        s.extend_from_slice(&buf[..n]);
    }
    out.add("ondemand_session", &s);
}
