//! Walking an image with `erofs-format` alone (no `erofs-reader`): the format tests check
//! the on-disk structures against the tools' output without the reader in between.

use std::collections::BTreeMap;

use erofs_format::Nid;
use erofs_format::dirent::DirBlock;
use erofs_format::inode::{FileType, Inode, InodeContext};
use erofs_format::superblock::SuperBlock;

/// The inode `nid` of image `img`.
pub fn read_inode(img: &[u8], ctx: &InodeContext, nid: Nid) -> Inode {
    let off = ctx.nid_offset(nid).expect("nid offset") as usize;
    Inode::parse(&img[off..], nid, ctx).unwrap_or_else(|e| panic!("nid {nid}: {e}"))
}

/// The entries (`.` and `..` included) of directory `dir`, whose data is flat or inline
/// (mkfs.erofs compresses directories only with `--zD`).
pub fn dir_entries(img: &[u8], dir: &Inode) -> Vec<(String, Nid)> {
    assert!(
        !dir.layout.is_compressed(),
        "directories are not compressed without --zD"
    );
    let bs = 1u64 << SuperBlock::parse(img).expect("superblock").blkszbits;
    let mut out = Vec::new();
    let flat = dir.flat_extent().expect("flat extent");
    let tail = dir.inline_tail().expect("inline tail");
    for i in 0..dir.data_blocks() {
        let len = (dir.size - i * bs).min(bs);
        let range = match (tail, flat) {
            (Some((off, tlen)), _) if i + 1 == dir.data_blocks() => off..off + tlen,
            (_, Some((off, _))) => off + i * bs..off + i * bs + len,
            _ => panic!("nid {}: directory without data", dir.nid),
        };
        let block =
            DirBlock::parse(&img[range.start as usize..range.end as usize]).expect("dir block");
        for e in block.iter() {
            out.push((
                String::from_utf8(e.name.to_vec()).expect("utf-8 name"),
                e.nid,
            ));
        }
    }
    out
}

/// Every inode of the image by path (`""` is the root), through its directories.
pub fn walk(img: &[u8]) -> BTreeMap<String, Inode> {
    let sb = SuperBlock::parse(img).expect("superblock");
    let ctx = InodeContext::new(sb).expect("inode context");
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), sb.root_nid())];
    while let Some((path, nid)) = todo.pop() {
        let inode = read_inode(img, &ctx, nid);
        if inode.file_type == FileType::Directory {
            for (name, child) in dir_entries(img, &inode) {
                if name != "." && name != ".." {
                    let p = if path.is_empty() {
                        name
                    } else {
                        format!("{path}/{name}")
                    };
                    todo.push((p, child));
                }
            }
        }
        out.insert(path, inode);
    }
    out
}
