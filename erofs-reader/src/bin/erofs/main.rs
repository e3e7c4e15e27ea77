//! `erofs`: inspect, extract and check EROFS images.
//!
//! Every subcommand takes the image first, then its arguments, plus `--device PATH`
//! (repeatable, device-table order) and `--blob-dir DIR` (devices found by tag).
//! Errors go to stderr, naming the image or path and, where there is one, what to do about
//! it; the exit code is 0 on success, 1 on errors (corruption found by `fsck` included) and 2
//! on usage errors. `RUST_LOG` sets the log level (default `warn`).

mod extract;
mod fsck;
mod progress;
mod remote;
mod show;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use erofs_reader::{
    CompressedExtent, Encoding, Extent, ExtentSource, ExtentTarget, FileType, Image, ImageBuilder,
    Inode, Metadata,
};

#[derive(Parser)]
#[command(
    name = "erofs",
    version,
    about = "Inspect, extract and check EROFS images",
    after_help = "Times are printed in UTC.\n\n\
        Logging: RUST_LOG=info, debug or trace prints the reader's log on stderr \
        (default: warn); RUST_LOG=erofs_reader=debug limits it to the reader.\n\n\
        Multi-device images (chunk-based with --blobdev, Nydus RAFS v6): pass each extra \
        device with --device in device-table order (`erofs sb IMAGE` lists them) or put \
        them in a directory under their tags and pass --blob-dir."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options every subcommand takes.
#[derive(Args, Clone)]
struct ImageArgs {
    /// The image file (primary device); `--image REF` instead reads an image from a registry.
    image: PathBuf,
    #[command(flatten)]
    remote: remote::RemoteArgs,
    /// An extra device (blob) file, in device-table order; repeat for each device.
    #[arg(long = "device", value_name = "PATH")]
    devices: Vec<PathBuf>,
    /// A directory holding devices named by their tag.
    #[arg(long, value_name = "DIR")]
    blob_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the superblock, features and devices.
    Sb {
        #[command(flatten)]
        img: ImageArgs,
    },
    /// List a directory.
    Ls {
        #[command(flatten)]
        img: ImageArgs,
        /// Directory (or file) to list.
        #[arg(default_value = "/")]
        path: String,
        /// Long format: mode, links, owner, size, mtime.
        #[arg(short = 'l')]
        long: bool,
        /// Recurse into subdirectories.
        #[arg(short = 'R')]
        recursive: bool,
    },
    /// Print an inode's metadata.
    Stat {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// Write files' contents to stdout, one after the other.
    Cat {
        #[command(flatten)]
        img: ImageArgs,
        /// The files.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List a file's extended attributes.
    Xattrs {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// Print where each byte range of a file lives: the chunk map of a plain or chunk-based
    /// file, the extents (pclusters) of a compressed one, as `dump.erofs -e` does.
    #[command(alias = "extents")]
    Chunks {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// Recreate the image's tree as DEST (never writing outside it), all or nothing: it is
    /// built in a temporary sibling and renamed into place when complete.
    Extract {
        #[command(flatten)]
        img: ImageArgs,
        /// Destination directory: must be absent or empty (unless --force).
        dest: PathBuf,
        /// Extract into a non-empty DEST: the image's top-level entries replace DEST's
        /// entries of the same name, other entries stay.
        #[arg(long)]
        force: bool,
        /// Worker threads writing file data (default: available cores). The tree does not
        /// depend on it.
        #[arg(short = 'j', long)]
        threads: Option<usize>,
        /// No progress line (it is shown only on a terminal anyway).
        #[arg(short, long)]
        quiet: bool,
    },
    /// Check every inode, read all file data and decode every compressed extent; exit 1 on
    /// corruption.
    Fsck {
        #[command(flatten)]
        img: ImageArgs,
        /// Worker threads reading file data (default: available cores). The report does not
        /// depend on it.
        #[arg(short = 'j', long)]
        threads: Option<usize>,
        /// No progress line (it is shown only on a terminal anyway).
        #[arg(short, long)]
        quiet: bool,
    },
}

impl ImageArgs {
    /// The image's name for messages: its path or its reference.
    fn name(&self) -> String {
        match &self.remote.reference {
            Some(r) => r.clone(),
            None => self.image.display().to_string(),
        }
    }
}

impl Cmd {
    fn img(&self) -> &ImageArgs {
        match self {
            Cmd::Sb { img }
            | Cmd::Ls { img, .. }
            | Cmd::Stat { img, .. }
            | Cmd::Cat { img, .. }
            | Cmd::Xattrs { img, .. }
            | Cmd::Chunks { img, .. }
            | Cmd::Extract { img, .. }
            | Cmd::Fsck { img, .. } => img,
        }
    }
}

/// `--threads`, or the number of cores available (at least 1).
fn threads_or_cores(threads: Option<usize>) -> usize {
    threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Open the image, or say which file is wrong and what to do.
fn open(args: &ImageArgs) -> Result<Image, Box<dyn std::error::Error>> {
    if args.remote.reference.is_some() {
        return remote::open(&args.remote);
    }
    for (what, p) in
        std::iter::once(("image", &args.image)).chain(args.devices.iter().map(|d| ("device", d)))
    {
        match std::fs::metadata(p) {
            Err(e) => return Err(format!("{what} {}: {e}", p.display()).into()),
            Ok(md) if md.is_dir() => {
                return Err(format!(
                    "{what} {} is a directory: give the image file (a Nydus image's \
                     bootstrap; its blobs go with --blob-dir)",
                    p.display()
                )
                .into());
            }
            Ok(_) => {}
        }
    }
    open_image(args).map_err(|e| {
        let hint = hint(&e);
        format!("{}: {e}{hint}", args.image.display()).into()
    })
}

/// What to do about an error, as a sentence starting with "; " (or nothing).
fn hint(e: &erofs_reader::Error) -> String {
    match e {
        erofs_reader::Error::MissingDevice { .. } => "; pass each extra device with --device PATH \
             in device-table order (`erofs sb IMAGE` lists them), or --blob-dir DIR holding them \
             by tag"
            .into(),
        erofs_reader::Error::Corrupt {
            kind: erofs_reader::CorruptKind::Superblock,
            ..
        } => "; is this an EROFS image? (`dump.erofs IMAGE` reads the same superblock)".into(),
        erofs_reader::Error::Unsupported { .. } => {
            "; this build of erofs may lack the decompressor (see `erofs sb IMAGE`)".into()
        }
        _ => String::new(),
    }
}

/// An error's text with its hint, if it is the reader's error.
pub(crate) fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<erofs_reader::Error>() {
        Some(r) => format!("{r}{}", hint(r)),
        None => e.to_string(),
    }
}

/// An error about `path` in the image, with a hint when there is one.
fn at(path: &str, e: erofs_reader::Error) -> Box<dyn std::error::Error> {
    let hint = hint(&e);
    let text = e.to_string();
    if text.contains(path) {
        format!("{text}{hint}").into()
    } else {
        format!("{path}: {text}{hint}").into()
    }
}

fn open_image(args: &ImageArgs) -> erofs_reader::Result<Image> {
    let path = &args.image;
    // A Nydus `--blob-inline-meta` data blob carries its own bootstrap (nydus.rs).
    if args.devices.is_empty()
        && let Some(image) = erofs_reader::nydus::open_inline_blob(path, args.blob_dir.as_deref())?
    {
        return Ok(image);
    }
    let mut b = ImageBuilder::open(path)?;
    for d in &args.devices {
        b = b.device_file(d)?;
    }
    if let Some(dir) = &args.blob_dir {
        b = b.blob_dir(dir);
    }
    b.build()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(remote::argv(std::env::args_os()));
    // `--image REF -v`: the registry client's request lines too.
    let filter = if remote::verbose(&cli.cmd.img().remote) {
        "warn,oci_lazy=debug,erofs=info"
    } else {
        "warn"
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter))
        .try_init();
    let result = run(cli.cmd);
    remote::report();
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (e.g. `erofs cat ... | head`) is not an error worth a message.
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("erofs: {}", explain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn run(cmd: Cmd) -> CliResult {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match cmd {
        Cmd::Sb { img } => {
            let image = open(&img)?;
            print_sb(&image, &mut out)?;
            // RAFS v6 bootstraps: blob table and prefetch list (nydus.rs).
            if let Some(rafs) = erofs_reader::nydus::RafsMeta::from_image(&image)? {
                write!(out, "{}", rafs.describe(&image))?;
            }
        }
        Cmd::Ls {
            img,
            path,
            long,
            recursive,
        } => {
            let image = open(&img)?;
            ls(&image, &path, long, recursive, &mut out)?;
        }
        Cmd::Stat { img, path } => {
            let image = open(&img)?;
            let md = image.symlink_metadata(&path).map_err(|e| at(&path, e))?;
            print_stat(&image, &path, &md, &mut out)?;
        }
        Cmd::Cat { img, paths } => {
            let image = open(&img)?;
            // Like cat(1): a file that fails is reported, the others are still written.
            let mut failed = false;
            let mut buf = vec![0u8; 1 << 20];
            for path in &paths {
                if let Err(e) = cat(&image, path, &mut buf, &mut out) {
                    if let Some(io) = e.downcast_ref::<io::Error>()
                        && io.kind() == io::ErrorKind::BrokenPipe
                    {
                        return Err(e);
                    }
                    out.flush()?;
                    eprintln!("erofs: {e}");
                    failed = true;
                }
            }
            out.flush()?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Xattrs { img, path } => {
            let image = open(&img)?;
            for x in image.xattrs(&path).map_err(|e| at(&path, e))? {
                writeln!(
                    out,
                    "{}={}",
                    String::from_utf8_lossy(&x.name),
                    show_value(&x.value)
                )?;
            }
        }
        Cmd::Chunks { img, path } => {
            let image = open(&img)?;
            let inode = image.lookup(&path).map_err(|e| at(&path, e))?;
            let size = inode.metadata().len();
            if inode.metadata().layout().is_compressed() {
                let extents = image.compressed_extents(&inode).map_err(|e| at(&path, e))?;
                print_compressed_extents(&extents, &mut out)?;
                out.flush()?;
                return Ok(ExitCode::SUCCESS);
            }
            writeln!(out, "{:>14} {:>12}  target", "file offset", "length")?;
            for Extent {
                file_offset,
                len,
                target,
            } in image.extents(&inode, 0..size).map_err(|e| at(&path, e))?
            {
                let t = match target {
                    ExtentTarget::Hole => "hole".to_string(),
                    ExtentTarget::Metabox { offset } => format!("metabox offset {offset}"),
                    ExtentTarget::Device { index, tag, offset } => {
                        let tag = if tag.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", String::from_utf8_lossy(&tag))
                        };
                        format!("device {index}{tag} offset {offset}")
                    }
                };
                writeln!(out, "{file_offset:>14} {len:>12}  {t}")?;
            }
        }
        Cmd::Extract {
            img,
            dest,
            force,
            threads,
            quiet,
        } => {
            let image = open(&img)?;
            let progress = progress::Progress::new(quiet);
            let report =
                extract::extract(&image, &dest, force, threads_or_cores(threads), &progress);
            progress.finish();
            let report = report?;
            out.flush()?;
            for w in &report.warnings {
                eprintln!("erofs: warning: {w}");
            }
            if !quiet {
                eprintln!(
                    "extracted {} entries, {} bytes into {}",
                    report.entries,
                    report.bytes,
                    dest.display()
                );
            }
        }
        Cmd::Fsck {
            img,
            threads,
            quiet,
        } => {
            let image = open(&img)?;
            let progress = progress::Progress::new(quiet);
            let mut report = fsck::fsck(&image, threads_or_cores(threads), &progress);
            progress.finish();
            // RAFS v6 with a blob dir: decode every blob chunk and check its digest (nydus.rs).
            if let (Some(dir), Some(rafs)) = (
                &img.blob_dir,
                erofs_reader::nydus::RafsMeta::from_image(&image)?,
            ) {
                let v = rafs.verify_blobs(&image, dir);
                writeln!(
                    out,
                    "RAFS: {} blob chunks decoded, {} digests verified, {} errors",
                    v.chunks,
                    v.verified,
                    v.errors.len()
                )?;
                report.errors.extend(v.errors);
            }
            for e in &report.errors {
                eprintln!("erofs: {e}");
            }
            writeln!(
                out,
                "{}: {} inodes ({} dirs, {} files, {} symlinks, {} other), {} bytes read in {:.3}s, {} errors",
                img.name(),
                report.inodes,
                report.dirs,
                report.files,
                report.symlinks,
                report.others,
                report.bytes,
                report.elapsed.as_secs_f64(),
                report.errors.len()
            )?;
            out.flush()?;
            if !report.errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Write one file of `erofs cat`.
fn cat(
    image: &Image,
    path: &str,
    buf: &mut [u8],
    out: &mut impl Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let inode = image.lookup(path).map_err(|e| at(path, e))?;
    if inode.metadata().is_dir() {
        return Err(at(
            path,
            erofs_reader::Error::IsADirectory(path.to_string()),
        ));
    }
    let mut off = 0u64;
    loop {
        let n = image.read_at(&inode, off, buf).map_err(|e| at(path, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// `dump.erofs -e` for a compressed file: logical range, length, where it is stored.
fn print_compressed_extents(extents: &[CompressedExtent], out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>4}  {:>24} {:>10}  stored",
        "ext", "logical offset", "length"
    )?;
    for (i, e) in extents.iter().enumerate() {
        let stored = match e.source {
            ExtentSource::Hole => "hole".to_string(),
            ExtentSource::Fragment { offset } => format!("fragment, packed inode offset {offset}"),
            ExtentSource::Pcluster {
                device,
                offset,
                len,
                encoding,
                inline,
            } => {
                let enc = match encoding {
                    Encoding::Shifted => "plain".to_string(),
                    Encoding::Interlaced => "plain, interlaced".to_string(),
                    Encoding::Compressed(a) => a.to_string(),
                };
                let dev = match device {
                    0 => String::new(),
                    u16::MAX => "metabox ".to_string(),
                    d => format!("device {d} "),
                };
                format!(
                    "{dev}{offset}..{} ({len} bytes, {enc}{}{})",
                    offset + len,
                    if inline { ", inline" } else { "" },
                    if e.partial_ref { ", partial" } else { "" }
                )
            }
        };
        writeln!(
            out,
            "{i:>4}: {:>11}..{:>11} {:>10}  {stored}",
            e.file_offset,
            e.file_offset + e.len,
            e.len
        )?;
    }
    Ok(())
}

/// Bytes a file occupies in the image: the stored pclusters of a compressed file, the
/// blocks of its data (on any device) otherwise; inline tails and fragments count their
/// length.
fn on_disk_size(image: &Image, inode: &Inode) -> erofs_reader::Result<u64> {
    let md = inode.metadata();
    if md.layout().is_compressed() {
        return Ok(image
            .compressed_extents(inode)?
            .iter()
            .map(|e| match e.source {
                ExtentSource::Pcluster { len, .. } => len,
                ExtentSource::Fragment { .. } => e.len,
                ExtentSource::Hole => 0,
            })
            .sum());
    }
    Ok(image
        .extents(inode, 0..md.len())?
        .iter()
        .map(|e| match e.target {
            ExtentTarget::Hole => 0,
            _ => e.len,
        })
        .sum())
}

fn show_value(v: &[u8]) -> String {
    if !v.is_empty() && v.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        format!("\"{}\"", String::from_utf8_lossy(v))
    } else {
        let mut s = String::from("0x");
        for b in v {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

fn print_sb(image: &Image, out: &mut impl Write) -> io::Result<()> {
    let sb = image.superblock();
    writeln!(out, "block size:      {}", image.block_size())?;
    writeln!(out, "root nid:        {}", image.root_nid())?;
    writeln!(out, "inodes:          {}", sb.inos.get())?;
    writeln!(out, "blocks:          {}", sb.blocks())?;
    writeln!(out, "meta blkaddr:    {}", sb.meta_blkaddr.get())?;
    writeln!(out, "xattr blkaddr:   {}", sb.xattr_blkaddr.get())?;
    let built = i64::try_from(sb.build_time()).unwrap_or(i64::MAX);
    writeln!(
        out,
        "build time:      {} UTC ({}.{:09})",
        show::ctime(built),
        sb.build_time(),
        sb.fixed_nsec.get()
    )?;
    writeln!(
        out,
        "volume name:     {}",
        String::from_utf8_lossy(sb.volume_name())
    )?;
    writeln!(out, "uuid:            {}", show::uuid(&sb.uuid))?;
    let compat: Vec<_> = sb.compat().names().collect();
    let incompat: Vec<_> = sb.incompat().names().collect();
    writeln!(
        out,
        "compat:          {:#x} {}",
        sb.feature_compat.get(),
        compat.join(" ")
    )?;
    writeln!(
        out,
        "incompat:        {:#x} {}",
        sb.feature_incompat.get(),
        incompat.join(" ")
    )?;
    writeln!(out, "extra devices:   {}", image.devices().len())?;
    for d in image.devices() {
        writeln!(
            out,
            "  device {}: tag {:?} blocks {} mapped_blkaddr {}{}",
            d.index,
            d.tag_str(),
            d.blocks,
            d.mapped_blkaddr,
            if d.present { "" } else { " (absent)" }
        )?;
    }
    Ok(())
}

fn type_char(ft: FileType) -> char {
    match ft {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        _ => '-',
    }
}

fn mode_string(md: &Metadata) -> String {
    let m = u32::from(md.mode());
    let mut s = String::new();
    s.push(type_char(md.file_type()));
    let rwx = |s: &mut String, bits: u32, special: bool, sc: char| {
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, special) {
            (true, true) => sc,
            (false, true) => sc.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    };
    rwx(&mut s, (m >> 6) & 7, m & 0o4000 != 0, 's');
    rwx(&mut s, (m >> 3) & 7, m & 0o2000 != 0, 's');
    rwx(&mut s, m & 7, m & 0o1000 != 0, 't');
    s
}

fn long_line(image: &Image, md: &Metadata, name: &str, target_of: Option<&str>) -> String {
    let size = if matches!(md.file_type(), FileType::CharDevice | FileType::BlockDevice) {
        format!("{}, {}", md.rdev_major(), md.rdev_minor())
    } else {
        md.len().to_string()
    };
    let mut line = format!(
        "{} {:>3} {:>6} {:>6} {:>10} {} {}",
        mode_string(md),
        md.nlink(),
        md.uid(),
        md.gid(),
        size,
        show::short_time(md.mtime()),
        name
    );
    if md.file_type() == FileType::Symlink
        && let Some(p) = target_of
        && let Ok(t) = image.read_link(p)
    {
        line.push_str(" -> ");
        line.push_str(&t.to_string_lossy());
    }
    line
}

fn ls(image: &Image, path: &str, long: bool, recursive: bool, out: &mut impl Write) -> CliResult {
    let md = image.symlink_metadata(path)?;
    if !md.is_dir() {
        if long {
            writeln!(out, "{}", long_line(image, &md, path, Some(path)))?;
        } else {
            writeln!(out, "{path}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut dirs = vec![path.to_string()];
    let mut first = true;
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = dirs.pop() {
        let inode = image.lookup(&dir)?;
        if !seen.insert(inode.nid()) {
            return Err(erofs_reader::Error::corrupt(
                format!("directory cycle at {dir}"),
                erofs_reader::Context::nid(inode.nid().0),
            )
            .into());
        }
        if recursive {
            if !first {
                writeln!(out)?;
            }
            writeln!(out, "{dir}:")?;
        }
        first = false;
        let mut subdirs = Vec::new();
        for e in image.read_dir_inode(&inode)? {
            let e = e?;
            if e.name() == b"." || e.name() == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(e.name()).into_owned();
            let child = Path::new(&dir).join(&name).to_string_lossy().into_owned();
            if long {
                let md = image.inode(e.nid())?.metadata().clone();
                writeln!(out, "{}", long_line(image, &md, &name, Some(&child)))?;
            } else {
                writeln!(out, "{name}")?;
            }
            if recursive && e.file_type() == FileType::Directory {
                subdirs.push(child);
            }
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_stat(image: &Image, path: &str, md: &Metadata, out: &mut impl Write) -> CliResult {
    writeln!(out, "  path: {path}")?;
    writeln!(out, "   nid: {}", md.nid())?;
    writeln!(out, "  type: {:?}", md.file_type())?;
    writeln!(
        out,
        "  mode: {:04o} ({})",
        md.mode() & 0o7777,
        mode_string(md)
    )?;
    writeln!(out, " links: {}", md.nlink())?;
    writeln!(out, "   uid: {}", md.uid())?;
    writeln!(out, "   gid: {}", md.gid())?;
    writeln!(out, "  size: {}", md.len())?;
    if md.file_type() == FileType::Regular {
        let stored = image
            .inode(md.nid())
            .and_then(|inode| on_disk_size(image, &inode))
            .map_err(|e| at(path, e))?;
        writeln!(
            out,
            "  disk: {stored} bytes (ratio {})",
            show::ratio(stored, md.len())
        )?;
    }
    writeln!(
        out,
        " mtime: {} UTC",
        show::timestamp(md.mtime(), md.mtime_nsec())
    )?;
    writeln!(out, "layout: {:?}", md.layout())?;
    writeln!(
        out,
        " inode: {} bytes, {} xattr bytes",
        md.inode_size(),
        md.xattr_size()
    )?;
    if matches!(md.file_type(), FileType::CharDevice | FileType::BlockDevice) {
        writeln!(out, "  rdev: {}, {}", md.rdev_major(), md.rdev_minor())?;
    }
    if md.file_type() == FileType::Symlink
        && let Ok(t) = image.read_link(path)
    {
        writeln!(out, "target: {}", t.to_string_lossy())?;
    }
    Ok(ExitCode::SUCCESS)
}
