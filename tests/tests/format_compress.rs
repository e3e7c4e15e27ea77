//! Compressed EROFS images built by `mkfs.erofs` (lz4, lz4hc, lzma, deflate, zstd; big
//! pclusters, ztailpacking, fragments, dedupe, full and compact indexes, 48-bit extents),
//! decoded with `erofs_format::compress` and checked against the source tree and against
//! what `dump.erofs` prints for the same image (`-s` algorithms, `-e` extents).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use erofs_format::Error;
use erofs_format::compress::{
    Algorithm, AlgorithmSet, CompactIndexes, CompressionConfigs, CompressionMap, EncodedExtents,
    FULL_INDEX_OFFSET, FullIndexes, HeadKind, IndexFormat, Lcluster, LclusterMap, LclusterType,
    MapAdvise, MapHeader,
};
use erofs_format::inode::{DataLayout, Inode, InodeContext, InodeData};
use erofs_format::superblock::{FeatureIncompat, SuperBlock};
use zerocopy::FromBytes;

// A deterministic generator, so the tree is the same on every run.
use tests::Rng;

/// The words of the compressible text files.
const WORDS: [&str; 8] = [
    "alpha ", "beta ", "gamma ", "delta\n", "eps ", "zeta ", "eta ", "theta ",
];

/// The source tree: incompressible, compressible and mixed files of assorted sizes,
/// a duplicate (for `-Ededupe`), tiny and empty files.
fn make_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut files = BTreeMap::new();
    let text = rng.text(&WORDS, 1_050_117);
    files.insert("text.txt".to_string(), text.clone());
    files.insert("d/dup.txt".to_string(), text);
    files.insert("rand.bin".to_string(), rng.bytes(300_001));
    files.insert("small.txt".to_string(), b"hello world\n".repeat(10));
    files.insert("empty".to_string(), Vec::new());
    files.insert("d/mid.txt".to_string(), {
        let mut v = b"abcdefgh".repeat(9000);
        v.extend_from_slice(b"tail");
        v
    });
    let mut mixed = Vec::new();
    for i in 0..12 {
        if i % 3 == 0 {
            mixed.extend(rng.bytes(40_000 + i * 1000));
        } else {
            mixed.extend(rng.text(&WORDS, 50_000 + i * 777));
        }
    }
    files.insert("d/e/mixed.bin".to_string(), mixed);
    files.insert("d/e/one_block.txt".to_string(), rng.text(&WORDS, 4096));
    for (path, data) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    files
}

/// The image bytes, its path, the source files by path, and the scratch dir holding them.
type Built = (Vec<u8>, PathBuf, BTreeMap<String, Vec<u8>>, tests::Scratch);

fn build(name: &str, opts: &[&str]) -> Option<Built> {
    let mkfs = tests::require_tool("mkfs.erofs")?;
    let dir = tests::scratch_dir(&format!("format_compress/{name}"));
    let src = dir.join("src");
    let files = make_tree(&src);
    let img = dir.join("image.erofs");
    tests::run(
        Command::new(mkfs)
            .args(opts)
            .args(["-T0", "--all-root", "--quiet"])
            .arg(&img)
            .arg(&src),
    );
    Some((std::fs::read(&img).unwrap(), img, files, dir))
}

use tests::raw::{read_inode, walk};
use tests::tree::{DumpExtent as Ext, dump_extents};

/// What one compressed file's metadata says, in the form `dump.erofs -e` prints.
struct Decoded {
    extents: Vec<Ext>,
    /// `(physical offset, length)` of each non-inline, non-fragment pcluster.
    pclusters: BTreeSet<(u64, u64)>,
    layout: &'static str,
    lclusters: u64,
    /// The map header's advise bits (empty for whole-file fragments).
    advise: MapAdvise,
    /// Lcluster types and markers seen.
    kinds: BTreeSet<&'static str>,
}

/// Decode the map of a compressed inode and rebuild its extents as zmap.c would (FIEMAP).
fn decode_file(
    img: &[u8],
    sb: &SuperBlock,
    inode: &Inode,
    configs: &CompressionConfigs,
) -> Decoded {
    let bs = sb.block_size();
    let pos = inode.meta_end().unwrap().next_multiple_of(8);
    let header = MapHeader::read_from_bytes(&img[pos as usize..pos as usize + 8]).unwrap();
    let format = match inode.layout {
        DataLayout::CompressedFull => IndexFormat::Full,
        DataLayout::CompressedCompact => IndexFormat::Compact,
        other => panic!("not compressed: {other:?}"),
    };
    let size = inode.size;
    match header.decode(format, sb.blkszbits).unwrap() {
        CompressionMap::Fragment { offset } => {
            assert!(sb.incompat().contains(FeatureIncompat::FRAGMENTS));
            let packed = sb.packed_nid().expect("fragments need a packed inode");
            let ctx = InodeContext::new(sb).unwrap();
            let p = read_inode(img, &ctx, packed);
            assert!(offset + size <= p.size, "fragment beyond the packed inode");
            Decoded {
                extents: vec![Ext {
                    la: 0,
                    llen: size,
                    pa: 0,
                    plen: 0,
                }],
                pclusters: Default::default(),
                layout: "fragment",
                lclusters: 0,
                advise: MapAdvise::empty(),
                kinds: BTreeSet::new(),
            }
        }
        CompressionMap::Lclusters(map) => {
            map.check_superblock(sb.incompat().contains(FeatureIncompat::BIG_PCLUSTER))
                .unwrap();
            assert_eq!(
                map.lcluster_bits, sb.blkszbits,
                "mkfs.erofs 1.9 uses block-sized lclusters"
            );
            let total = size.div_ceil(bs);
            let lclusters: Vec<Lcluster> = match format {
                IndexFormat::Full => {
                    let start = (pos + FULL_INDEX_OFFSET) as usize;
                    let v = FullIndexes::new(&img[start..], total, &map).unwrap();
                    v.iter().collect::<Result<_, _>>().unwrap()
                }
                IndexFormat::Compact => {
                    let ebase = pos + 8;
                    let v =
                        CompactIndexes::new(&img[ebase as usize..], ebase, total, &map).unwrap();
                    v.iter().collect::<Result<_, _>>().unwrap()
                }
            };
            let layout = match format {
                IndexFormat::Full => "full",
                IndexFormat::Compact if map.advise.contains(MapAdvise::COMPACTED_2B) => {
                    "compact-2b"
                }
                IndexFormat::Compact => "compact-4b",
            };
            let inline_pos = if let Some(idata) = map.inline_size {
                // The inline pcluster follows the indexes.
                let end = match format {
                    IndexFormat::Full => pos + FULL_INDEX_OFFSET + 8 * total,
                    IndexFormat::Compact => {
                        let ebase = pos + 8;
                        let v = CompactIndexes::new(&img[ebase as usize..], ebase, total, &map)
                            .unwrap();
                        ebase + v.layout().byte_len()
                    }
                };
                Some((end, u64::from(idata)))
            } else {
                None
            };
            let extents = lcluster_extents(&lclusters, &map, size, bs, inline_pos);
            check_lclusters(&lclusters, &map, size, sb, configs.available);
            let pclusters = extents
                .iter()
                .filter(|e| e.plen != 0 && Some(e.pa) != inline_pos.map(|p| p.0))
                .map(|e| (e.pa, e.plen))
                .collect();
            let kinds = lclusters
                .iter()
                .map(|l| match (l.lcluster_type(), l) {
                    (LclusterType::Plain, _) => "plain",
                    (LclusterType::Head1, _) => "head1",
                    (LclusterType::Head2, _) => "head2",
                    (
                        _,
                        Lcluster::NonHead {
                            compressed_blocks: Some(_),
                            ..
                        },
                    ) => "cblkcnt",
                    _ => "nonhead",
                })
                .chain(
                    lclusters
                        .iter()
                        .any(|l| {
                            matches!(
                                l,
                                Lcluster::Head {
                                    partial_ref: true,
                                    ..
                                }
                            )
                        })
                        .then_some("partial-ref"),
                )
                .collect();
            Decoded {
                extents,
                pclusters,
                layout,
                lclusters: total,
                advise: map.advise,
                kinds,
            }
        }
        CompressionMap::Extents(map) => {
            let recs_at = pos + map.records_offset(pos).unwrap();
            let count = map.record_count(size).unwrap();
            let v = EncodedExtents::new(&img[recs_at as usize..], &map, count).unwrap();
            let recs: Vec<_> = v.iter().collect();
            let mut extents = Vec::new();
            for (i, r) in recs.iter().enumerate() {
                let la = r
                    .lstart
                    .unwrap_or(i as u64 * (1 << map.lcluster_bits.unwrap()));
                let end = recs
                    .get(i + 1)
                    .map(|n| {
                        n.lstart
                            .unwrap_or((i as u64 + 1) << map.lcluster_bits.unwrap())
                    })
                    .unwrap_or(size)
                    .min(size);
                extents.push(Ext {
                    la,
                    llen: end - la,
                    pa: r.pstart,
                    plen: u64::from(r.length()),
                });
                assert!(r.pstart + u64::from(r.length()) <= img.len() as u64);
            }
            Decoded {
                pclusters: Default::default(),
                layout: "extents",
                lclusters: count,
                extents,
                advise: map.advise,
                kinds: BTreeSet::new(),
            }
        }
    }
}

/// Invariants of a decoded lcluster array.
fn check_lclusters(
    lcl: &[Lcluster],
    map: &LclusterMap,
    size: u64,
    sb: &SuperBlock,
    available: AlgorithmSet,
) {
    let lsize = map.lcluster_size();
    assert_eq!(lcl.len() as u64, size.div_ceil(lsize));
    match lcl[0] {
        Lcluster::Head { cluster_offset, .. } => {
            assert_eq!(cluster_offset, 0, "lcluster 0 starts the file")
        }
        other => panic!("lcluster 0 is {other:?}, not a HEAD"),
    }
    for (lcn, l) in lcl.iter().enumerate() {
        match *l {
            Lcluster::Head {
                cluster_offset,
                blkaddr,
                kind,
                ..
            } => {
                assert!(u64::from(cluster_offset) < lsize);
                if kind == HeadKind::Head2 {
                    assert!(sb.incompat().contains(FeatureIncompat::COMPR_HEAD2));
                }
                if let Some(alg) = kind.algorithm(map) {
                    available.require(alg).unwrap();
                }
                // Block addresses of the tail pcluster are meaningless when it is inline
                // or a fragment; all others must lie in the image.
                // A HEAD at or past EOF (mkfs.erofs writes one when the data ends inside
                // the last lcluster) maps nothing.
                let la = lcn as u64 * lsize + u64::from(cluster_offset);
                let last_head = !lcl[lcn + 1..].iter().enumerate().any(|(k, x)| match *x {
                    Lcluster::Head { cluster_offset, .. } => {
                        (lcn + 1 + k) as u64 * lsize + u64::from(cluster_offset) < size
                    }
                    _ => false,
                });
                let tail_elsewhere =
                    last_head && (map.inline_size.is_some() || map.fragment_offset.is_some());
                if la < size && !tail_elsewhere {
                    assert!(
                        u64::from(blkaddr) < sb.blocks(),
                        "lcluster {lcn}: blkaddr {blkaddr} beyond the image"
                    );
                }
            }
            Lcluster::NonHead { lookback, .. } => {
                // Following the lookback chain reaches a HEAD.
                let mut at = lcn;
                let mut step = lookback;
                loop {
                    assert!(
                        step as usize <= at,
                        "lcluster {lcn}: lookback past the start"
                    );
                    at -= step as usize;
                    match lcl[at] {
                        Lcluster::Head { .. } => break,
                        Lcluster::NonHead { lookback, .. } => {
                            assert!(lookback > 0, "lcluster {at}: lookback 0");
                            step = lookback;
                        }
                    }
                }
            }
        }
    }
}

/// The extents `z_erofs_map_blocks_iter` (with FIEMAP) reports, from the decoded lclusters.
fn lcluster_extents(
    lcl: &[Lcluster],
    map: &LclusterMap,
    size: u64,
    bs: u64,
    inline: Option<(u64, u64)>,
) -> Vec<Ext> {
    let lsize = map.lcluster_size();
    let heads: Vec<(usize, u64, HeadKind, u32)> = lcl
        .iter()
        .enumerate()
        .filter_map(|(lcn, l)| match *l {
            Lcluster::Head {
                kind,
                cluster_offset,
                blkaddr,
                ..
            } => {
                let la = lcn as u64 * lsize + u64::from(cluster_offset);
                (la < size).then_some((lcn, la, kind, blkaddr))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, &(lcn, la, kind, blkaddr)) in heads.iter().enumerate() {
        let end = heads.get(i + 1).map_or(size, |h| h.1);
        let last = i + 1 == heads.len();
        let (pa, plen) = if let (true, Some(inline)) = (last, inline) {
            inline
        } else if last && map.fragment_offset.is_some() {
            (0, 0)
        } else {
            let big = match kind {
                HeadKind::Head1 => map.big_pcluster_1(),
                _ => map.big_pcluster_2(),
            };
            let blocks = if !big || (lcn as u64 + 1) * lsize >= size {
                1
            } else {
                match lcl[lcn + 1] {
                    Lcluster::NonHead {
                        compressed_blocks: Some(n),
                        lookback: 1,
                        ..
                    } => u64::from(n),
                    Lcluster::NonHead { .. } => {
                        panic!("lcluster {}: no CBLKCNT after a big pcluster head", lcn + 1)
                    }
                    Lcluster::Head { .. } => 1,
                }
            };
            (u64::from(blkaddr) * bs, blocks * bs)
        };
        out.push(Ext {
            la,
            llen: end - la,
            pa,
            plen,
        });
    }
    out
}

/// What the compressed files of one image used.
#[derive(Debug)]
struct Seen {
    /// Index layouts and how many files use each.
    layouts: BTreeMap<&'static str, u64>,
    /// Union of all map headers' advise bits.
    advise: MapAdvise,
    /// Lcluster kinds.
    kinds: BTreeSet<&'static str>,
}

/// Build, decode every compressed file, and compare with the tree and dump.erofs.
fn check_image(name: &str, opts: &[&str], expect_alg: Algorithm) -> Option<Seen> {
    let (img, path, files, _dir) = build(name, opts)?;
    let sb = SuperBlock::parse(&img).unwrap();
    let configs = match sb.available_compr_algs() {
        Some(algs) => {
            CompressionConfigs::parse(&img, 1024 + sb.sb_size(), algs, sb.blkszbits).unwrap()
        }
        None => CompressionConfigs::legacy(sb.lz4_max_distance().unwrap_or(0)),
    };
    assert!(
        configs.available.has(expect_alg),
        "{name}: {:?}",
        configs.available
    );

    // dump.erofs -s names the same algorithms.
    let dump = tests::require_tool("dump.erofs")?;
    let s = tests::run(Command::new(&dump).arg("-s").arg(&path));
    let line = s.lines().find(|l| l.contains("compr_algs")).unwrap_or("");
    let names: Vec<&str> = line
        .split(':')
        .nth(1)
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect();
    let ours: Vec<&str> = configs
        .available
        .algorithms()
        .map(Algorithm::name)
        .collect();
    if sb.available_compr_algs().is_some() {
        assert_eq!(names, ours, "{name}: dump.erofs -s says {line:?}");
    }

    let inodes = walk(&img);
    let mut layouts = BTreeMap::new();
    let mut advise = MapAdvise::empty();
    let mut kinds = BTreeSet::new();
    let mut total_blocks = 0;
    let mut pclusters = BTreeSet::new();
    for (p, data) in &files {
        let inode = inodes
            .get(p.as_str())
            .unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!(inode.size, data.len() as u64, "{p}");
        if !inode.layout.is_compressed() {
            continue;
        }
        let d = decode_file(&img, sb, inode, &configs);
        *layouts.entry(d.layout).or_insert(0) += 1;
        advise |= d.advise;
        kinds.extend(d.kinds.iter().copied());
        if d.layout != "extents" && d.layout != "fragment" {
            assert_eq!(d.lclusters, inode.size.div_ceil(sb.block_size()), "{p}");
        }
        // The extents tile the file.
        let mut at = 0;
        for e in &d.extents {
            assert_eq!(e.la, at, "{p}: extents must be contiguous");
            at += e.llen;
        }
        assert_eq!(at, inode.size, "{p}: extents must cover the file");
        assert_eq!(
            d.extents,
            dump_extents(&path, &format!("--path=/{p}")),
            "{name}: {p}: extents differ from dump.erofs -e"
        );
        if let InodeData::Compressed { blocks } = inode.data {
            total_blocks += blocks;
        }
        pclusters.extend(d.pclusters);
    }
    // Each pcluster is written (and counted in some file's compressed_blocks) once, even
    // when deduplicated files share it.
    if !layouts.contains_key("extents") {
        let distinct: u64 = pclusters
            .iter()
            .map(|(_, plen)| plen / sb.block_size())
            .sum();
        assert_eq!(total_blocks, distinct, "{name}: sum of compressed_blocks");
    }
    assert!(!layouts.is_empty(), "{name}: no compressed files");
    // dump.erofs -S counts the same compressed files.
    let stats = tests::run(Command::new(&dump).arg("-S").arg(&path));
    let dumped: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem compressed files:"))
        .expect("dump.erofs -S prints the compressed file count")
        .trim()
        .parse()
        .unwrap();
    let mut ours = inodes.values().filter(|i| i.layout.is_compressed()).count() as u64;
    // The packed inode (fragments) is not in the tree but is counted; its own map decodes
    // like any file's.
    if let Some(packed) = sb.packed_nid() {
        let ctx = InodeContext::new(sb).unwrap();
        let p = read_inode(&img, &ctx, packed);
        if p.layout.is_compressed() {
            ours += 1;
            let d = decode_file(&img, sb, &p, &configs);
            assert_eq!(
                d.extents,
                dump_extents(&path, &format!("--nid={}", packed.0)),
                "{name}: packed inode extents"
            );
        }
    }
    assert_eq!(ours, dumped, "{name}: compressed files per dump.erofs -S");
    let seen = Seen {
        layouts,
        advise,
        kinds,
    };
    eprintln!("{name}: {seen:?}");
    Some(seen)
}

#[test]
fn lz4_compact_2b() {
    let Some(s) = check_image("lz4", &["-zlz4"], Algorithm::Lz4) else {
        return;
    };
    assert!(s.layouts.contains_key("compact-2b"), "{s:?}");
    assert!(
        s.kinds.contains("head1") && s.kinds.contains("nonhead"),
        "{s:?}"
    );
}

#[test]
fn lz4_512_byte_blocks() {
    // lclusterbits 9: compact entries still carry 12-bit offsets.
    let Some(s) = check_image("lz4-512", &["-zlz4", "-b512"], Algorithm::Lz4) else {
        return;
    };
    assert!(s.layouts.contains_key("compact-2b"), "{s:?}");
}

#[test]
fn lz4hc_big_pcluster_ztailpacking() {
    let opts = ["-zlz4hc,level=9", "-C65536", "-Eztailpacking"];
    let Some(s) = check_image("lz4hc", &opts, Algorithm::Lz4) else {
        return;
    };
    assert!(s.layouts.contains_key("compact-2b"), "{s:?}");
    assert!(
        s.advise
            .contains(MapAdvise::BIG_PCLUSTER_1 | MapAdvise::INLINE_PCLUSTER),
        "{s:?}"
    );
    assert!(
        s.kinds.contains("cblkcnt") && s.kinds.contains("plain"),
        "{s:?}"
    );
}

#[test]
fn lz4hc_full_indexes() {
    let opts = ["-zlz4hc", "-C16384", "-Elegacy-compress"];
    let Some(s) = check_image("lz4hc-full", &opts, Algorithm::Lz4) else {
        return;
    };
    assert_eq!(
        s.layouts.keys().copied().collect::<Vec<_>>(),
        ["full"],
        "{s:?}"
    );
    assert!(s.kinds.contains("cblkcnt"), "{s:?}");
}

#[test]
fn lzma_fragments() {
    let opts = ["-zlzma", "-C65536", "-Efragments"];
    let Some(s) = check_image("lzma", &opts, Algorithm::Lzma) else {
        return;
    };
    assert!(s.layouts.contains_key("fragment"), "{s:?}");
    assert!(
        s.advise
            .contains(MapAdvise::FRAGMENT_PCLUSTER | MapAdvise::INTERLACED_PCLUSTER),
        "{s:?}"
    );
}

#[test]
fn lzma_config_record() {
    let Some((img, _, _, _dir)) = build("lzma-cfg", &["-zlzma,dictsize=65536", "-C65536"]) else {
        return;
    };
    let sb = SuperBlock::parse(&img).unwrap();
    let algs = sb.available_compr_algs().unwrap();
    let c = CompressionConfigs::parse(&img, 1024 + sb.sb_size(), algs, 12).unwrap();
    assert_eq!(c.available, AlgorithmSet::LZMA);
    assert_eq!(c.lzma.unwrap().dict_size.get(), 65536);
    assert!(c.lz4.is_none());
}

#[test]
fn deflate_dedupe_full() {
    let opts = ["-zdeflate", "-C16384", "-Ededupe"];
    let Some(s) = check_image("deflate", &opts, Algorithm::Deflate) else {
        return;
    };
    // Dedupe forces full indexes.
    assert!(s.layouts.contains_key("full"), "{s:?}");
}

#[test]
fn zstd_ztailpacking_fragments() {
    let opts = ["-zzstd", "-C65536", "-Eztailpacking,fragments"];
    let Some(s) = check_image("zstd", &opts, Algorithm::Zstd) else {
        return;
    };
    assert!(s.advise.contains(MapAdvise::FRAGMENT_PCLUSTER), "{s:?}");
}

#[test]
fn zstd_48bit_extents() {
    let Some(s) = check_image("zstd-48bit", &["-zzstd", "-E48bit"], Algorithm::Zstd) else {
        return;
    };
    assert!(s.layouts.contains_key("extents"), "{s:?}");
    assert!(s.advise.contains(MapAdvise::EXTENTS), "{s:?}");
}

#[test]
fn two_algorithms() {
    // mkfs.erofs 1.9.4 crashes when compress hints pick the second algorithm, so this only
    // checks that the superblock lists both and carries one record each.
    let Some((img, _, _, _dir)) = build("two-algs", &["-zlz4hc:lzma"]) else {
        return;
    };
    let sb = SuperBlock::parse(&img).unwrap();
    let algs = sb.available_compr_algs().unwrap();
    let c = CompressionConfigs::parse(&img, 1024 + sb.sb_size(), algs, 12).unwrap();
    assert_eq!(c.available, AlgorithmSet::LZ4 | AlgorithmSet::LZMA, "{c:?}");
    assert!(c.lz4.is_some() && c.lzma.is_some());
}

#[test]
fn corrupted_map_header_is_refused() {
    let Some((mut img, _, _, _dir)) = build("corrupt", &["-zlz4"]) else {
        return;
    };
    let sb = SuperBlock::parse(&img).unwrap().to_owned();
    let inodes = walk(&img);
    let text = inodes["text.txt"];
    let pos = text.meta_end().unwrap().next_multiple_of(8) as usize;
    img[pos + 6] = 0x07; // HEAD1 algorithm 7
    let h = MapHeader::read_from_bytes(&img[pos..pos + 8]).unwrap();
    assert_eq!(
        h.decode(IndexFormat::Compact, sb.blkszbits),
        Err(Error::UnsupportedAlgorithm { id: 7 })
    );
}
