//! `erofs`: inspect, extract and check EROFS images.
//!
//! Every subcommand takes the image first, then its arguments, plus `--device PATH`
//! (repeatable, device-table order) and `--blob-dir DIR` (devices found by tag).
//! Errors go to stderr; the exit code is 0 on success, 1 on errors (corruption found by
//! `fsck` included) and 2 on usage errors.

mod extract;
mod fsck;
mod remote;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use erofs_reader::{Extent, ExtentTarget, FileType, Image, ImageBuilder, Metadata};

#[derive(Parser)]
#[command(
    name = "erofs",
    version,
    about = "Inspect, extract and check EROFS images"
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
    /// Write a file's contents to stdout.
    Cat {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// List a file's extended attributes.
    Xattrs {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// Print a file's chunk map: where each byte range lives.
    Chunks {
        #[command(flatten)]
        img: ImageArgs,
        /// The file.
        path: String,
    },
    /// Recreate the image's tree under DEST (never writing outside it).
    Extract {
        #[command(flatten)]
        img: ImageArgs,
        /// Destination directory (created if missing; must be empty or absent).
        dest: PathBuf,
    },
    /// Check every inode and read every byte; exit 1 on corruption.
    Fsck {
        #[command(flatten)]
        img: ImageArgs,
        /// Worker threads for data reads (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
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

fn open(args: &ImageArgs) -> Result<Image, Box<dyn std::error::Error>> {
    if args.remote.reference.is_some() {
        return remote::open(&args.remote);
    }
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
    Ok(b.build()?)
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
            eprintln!("erofs: {e}");
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
            let md = image.symlink_metadata(&path)?;
            print_stat(&image, &path, &md, &mut out)?;
        }
        Cmd::Cat { img, path } => {
            let image = open(&img)?;
            let inode = image.lookup(&path)?;
            if inode.metadata().is_dir() {
                return Err(erofs_reader::Error::IsADirectory(path).into());
            }
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            loop {
                let n = image.read_at(&inode, off, &mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
                off += n as u64;
            }
        }
        Cmd::Xattrs { img, path } => {
            let image = open(&img)?;
            for x in image.xattrs(&path)? {
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
            let inode = image.lookup(&path)?;
            let size = inode.metadata().len();
            writeln!(out, "{:>14} {:>12}  target", "file offset", "length")?;
            for Extent {
                file_offset,
                len,
                target,
            } in image.extents(&inode, 0..size)?
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
        Cmd::Extract { img, dest } => {
            let image = open(&img)?;
            let report = extract::extract(&image, &dest)?;
            out.flush()?;
            for w in &report.warnings {
                eprintln!("erofs: warning: {w}");
            }
            eprintln!(
                "extracted {} entries, {} bytes into {}",
                report.entries,
                report.bytes,
                dest.display()
            );
        }
        Cmd::Fsck { img, threads } => {
            let image = open(&img)?;
            let threads = threads
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1)
                .max(1);
            let mut report = fsck::fsck(&image, threads);
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
    writeln!(
        out,
        "build time:      {}.{:09}",
        sb.build_time(),
        sb.fixed_nsec.get()
    )?;
    writeln!(
        out,
        "volume name:     {}",
        String::from_utf8_lossy(sb.volume_name())
    )?;
    let uuid: String = sb.uuid.iter().map(|b| format!("{b:02x}")).collect();
    writeln!(out, "uuid:            {uuid}")?;
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
        "{} {:>3} {:>6} {:>6} {:>10} {}.{:09} {}",
        mode_string(md),
        md.nlink(),
        md.uid(),
        md.gid(),
        size,
        md.mtime(),
        md.mtime_nsec(),
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

fn print_stat(image: &Image, path: &str, md: &Metadata, out: &mut impl Write) -> io::Result<()> {
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
    writeln!(out, " mtime: {}.{:09}", md.mtime(), md.mtime_nsec())?;
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
    Ok(())
}
