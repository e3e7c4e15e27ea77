//! `erofs-ondemand serve --prefetch` starts with the RAFS v6 prefetch table of every Nydus
//! bootstrap in the blob directory: `ondemand::plan::rafs_bootstraps` finds the bootstraps
//! and `rafs_prefetch_ranges` turns the table (written by `nydus-image --prefetch-policy fs`)
//! into ranges of each blob's uncompressed address space, keyed by the blob id (the cookie
//! key the kernel opens the blob under). Needs `nydus-image` and `mkfs.erofs`.

use std::path::Path;
use std::process::Command;

fn write_file(path: &Path, len: usize, seed: u8) {
    // xorshift64: no two chunks alike, so nydus-image dedupes nothing.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect();
    std::fs::write(path, data).unwrap();
}

#[test]
fn prefetch_table_becomes_blob_ranges() {
    let Some(mkfs) = tests::require_tool("mkfs.erofs") else {
        return;
    };
    let dir = tests::scratch_dir("rafs_prefetch_plan");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("hot")).unwrap();
    std::fs::create_dir_all(src.join("cold")).unwrap();
    write_file(&src.join("hot/a"), 300 * 1024, 1);
    write_file(&src.join("hot/b"), 70 * 1024, 2);
    write_file(&src.join("cold/c"), 2 << 20, 3);
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();

    let Some(_) = tests::nydus_image::Create::new(&src, &blobs)
        .bootstrap(&blobs.join("img"))
        .args(&["--compressor", "none", "--chunk-size", "0x10000"])
        .prefetch("/hot\n")
        .run()
    else {
        return;
    };
    // A plain EROFS image beside it is not a Nydus bootstrap.
    tests::run(Command::new(&mkfs).arg(blobs.join("plain")).arg(&src));

    assert_eq!(
        ondemand::plan::rafs_bootstraps(&blobs),
        vec!["img".to_string()]
    );
    assert!(
        ondemand::plan::rafs_prefetch_ranges(&blobs, "plain")
            .unwrap()
            .is_empty(),
        "a plain EROFS image has no prefetch table"
    );

    let ranges = ondemand::plan::rafs_prefetch_ranges(&blobs, "img").unwrap();
    let blob_ids: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "img" && n != "plain")
        .collect();
    assert_eq!(blob_ids.len(), 1, "one data blob: {blob_ids:?}");
    let keys: Vec<&[u8]> = ranges.keys().map(|k| k.as_slice()).collect();
    assert_eq!(
        keys,
        vec![blob_ids[0].as_bytes()],
        "ranges are keyed by the blob id"
    );
    let set = &ranges[blob_ids[0].as_bytes()];
    // /hot holds 370 KiB in 64 KiB chunks: 5 + 2 chunks; /cold/c (2 MiB) is not listed.
    let hot = 300 * 1024 + 70 * 1024;
    let hot_chunks = (5 + 2) * 64 * 1024;
    assert!(
        set.len() >= hot && set.len() <= hot_chunks,
        "prefetch ranges hold {} bytes, /hot is {hot} bytes in {hot_chunks} bytes of chunks",
        set.len()
    );
}
