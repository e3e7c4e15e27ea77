//! Tool-less checks over a committed 4 KiB image made by mkfs.erofs 1.9.4
//! (`mkfs.erofs -T0 -U 00000000-0000-0000-0000-000000000001 --all-root tiny.erofs SRC`,
//! SRC = `hello.txt` ("hello, erofs\n"), `link -> hello.txt`, `dir/nested.txt`
//! ("nested\n")). The image-building tests live in the workspace's `tests` package.

use std::sync::Arc;

use erofs_reader::{
    CountingSource, Error, ExtentTarget, FileType, Image, MmapSource, Piece, Source,
};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny.erofs");

fn tiny() -> Image {
    Image::from_source(std::fs::read(TINY).unwrap()).unwrap()
}

#[test]
fn listing_and_metadata() {
    let image = tiny();
    assert_eq!(image.block_size(), 4096);
    assert!(image.devices().is_empty());
    let names: Vec<(Vec<u8>, FileType)> = image
        .read_dir("/")
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.name().to_vec(), e.file_type())
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (b".".to_vec(), FileType::Directory),
            (b"..".to_vec(), FileType::Directory),
            (b"dir".to_vec(), FileType::Directory),
            (b"hello.txt".to_vec(), FileType::Regular),
            (b"link".to_vec(), FileType::Symlink),
        ]
    );
    let md = image.metadata("hello.txt").unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 13);
    assert_eq!((md.uid(), md.gid()), (0, 0));
    // -T0: every inode has the build time 0.
    assert_eq!(md.mtime(), 0);
    assert_eq!(image.metadata("/").unwrap().nlink(), 3);
}

#[test]
fn contents_links_and_paths() {
    let image = tiny();
    assert_eq!(image.read("/hello.txt").unwrap(), b"hello, erofs\n");
    assert_eq!(image.read("/link").unwrap(), b"hello, erofs\n");
    assert_eq!(
        image.read_link("/link").unwrap(),
        std::path::Path::new("hello.txt")
    );
    assert_eq!(image.read("dir/../dir/./nested.txt").unwrap(), b"nested\n");
    assert_eq!(image.read("/../../dir/nested.txt").unwrap(), b"nested\n");
    assert!(matches!(image.read("/nope"), Err(Error::NotFound(_))));
    assert!(matches!(image.read("/dir"), Err(Error::IsADirectory(_))));
    assert!(matches!(
        image.read("/hello.txt/x"),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        image.read_link("/hello.txt"),
        Err(Error::NotASymlink(_))
    ));
    let mut buf = [0u8; 100];
    assert_eq!(image.read_at("/hello.txt", 7, &mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"erofs\n");
    assert_eq!(image.read_at("/hello.txt", 13, &mut buf).unwrap(), 0);
    assert_eq!(image.read_at("/hello.txt", u64::MAX, &mut buf).unwrap(), 0);
}

#[test]
fn extents_of_inline_data() {
    let image = tiny();
    let inode = image.lookup("/hello.txt").unwrap();
    let ext = image.extents(&inode, 0..u64::MAX).unwrap();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].len, 13);
    let ExtentTarget::Device { index, offset, .. } = &ext[0].target else {
        panic!("{ext:?}")
    };
    assert_eq!(*index, 0);
    let raw = std::fs::read(TINY).unwrap();
    assert_eq!(
        &raw[*offset as usize..*offset as usize + 13],
        b"hello, erofs\n"
    );
    assert!(image.extents(&inode, 20..30).unwrap().is_empty());
    let mut pieces = Vec::new();
    image
        .for_each_piece(&inode, |p| {
            if let Piece::Data(d) = p {
                pieces.extend_from_slice(d);
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(pieces, b"hello, erofs\n");
}

/// `Image::device_range` resolves an extent to a source and offset; sources backed by a
/// file lend it (`Source::file`) with the same bytes at the same offsets, the others do
/// not (a counting wrapper must not let reads bypass it).
#[test]
fn extents_resolve_to_file_offsets() {
    use std::os::unix::fs::FileExt;
    let image = Image::from_source(MmapSource::open(TINY).unwrap()).unwrap();
    let inode = image.lookup("/hello.txt").unwrap();
    let ext = image.extents(&inode, 0..u64::MAX).unwrap();
    let ExtentTarget::Device { index, offset, .. } = &ext[0].target else {
        panic!("{ext:?}")
    };
    let (src, off) = image.device_range(*index, *offset).unwrap();
    assert_eq!(off, *offset);
    let file = src.file().expect("a mapped file lends its file");
    let mut buf = [0u8; 13];
    FileExt::read_exact_at(file, &mut buf, off).unwrap();
    assert_eq!(&buf, b"hello, erofs\n");
    let plain = std::fs::File::open(TINY).unwrap();
    assert!(Source::file(&plain).is_some());
    assert!(Source::file(&Arc::new(MmapSource::open(TINY).unwrap())).is_some());
    assert!(Source::file(&std::fs::read(TINY).unwrap()).is_none());
    assert!(CountingSource::new(plain).file().is_none());
    // Not in the device table: an error, no panic.
    assert!(image.device_range(3, 0).is_err());
}

#[test]
fn sources_agree() {
    let bytes = std::fs::read(TINY).unwrap();
    let by_mmap = Image::from_source(MmapSource::open(TINY).unwrap()).unwrap();
    let by_file = Image::from_source(std::fs::File::open(TINY).unwrap()).unwrap();
    let by_arc = Image::from_source(Arc::<[u8]>::from(bytes)).unwrap();
    for image in [&by_mmap, &by_file, &by_arc] {
        assert_eq!(image.read("/dir/nested.txt").unwrap(), b"nested\n");
        image.release_memory();
        assert_eq!(image.read("/link").unwrap(), b"hello, erofs\n");
    }
}

#[test]
fn lookup_reads_little() {
    let counting = Arc::new(CountingSource::new(std::fs::read(TINY).unwrap()));
    let image = Image::from_source(counting.clone()).unwrap();
    counting.reset();
    let md = image.metadata("/dir/nested.txt").unwrap();
    assert_eq!(md.len(), 7);
    // root inode, root dir data, dir inode, dir data, file inode: a handful of reads
    // of at most one block each.
    assert!(counting.reads() <= 8, "{:?}", counting.ranges());
    assert!(counting.ranges().iter().all(|r| r.end - r.start <= 4096));
    assert!(counting.bytes_read() < 4096);
    // The counting source is still a Source.
    assert_eq!(counting.size().unwrap(), 4096);
}

#[test]
fn io_error_conversion() {
    let image = tiny();
    let e: std::io::Error = image.metadata("/missing").unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
}
