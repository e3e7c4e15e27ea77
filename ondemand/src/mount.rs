//! Mounting an image: file-backed with no daemon when every blob is local, else EROFS over
//! fscache (which needs a bound cache and a daemon such as [`crate::Daemon`]).
//!
//! [`plan`] reads the image's device table (with `erofs-reader`) and looks for each blob by
//! tag in a blob directory; [`mount_image`] then mounts file-backed
//! (`mount("IMAGE", DIR, "erofs", MS_RDONLY, "device=BLOB,...")`, Linux 6.12 and later with
//! `CONFIG_EROFS_FS_BACKED_BY_FILE`) and says so, or says why it cannot: a blob is missing
//! (then only fscache can serve the image lazily: [`mount_fscache`]), or the kernel refused
//! (`ENOTBLK`: no file-backed mounts, or the image lies on a stacked filesystem such as
//! overlayfs).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use ondemand::mount::{Mode, mount_image};
//! let mounted = mount_image("/images/app.erofs".as_ref(), Some("/blobs".as_ref()), "/mnt/app".as_ref())?;
//! match mounted {
//!     Mode::FileBacked { devices } => println!("file-backed, {} blobs", devices.len()),
//!     Mode::NeedsFscache { reason } => println!("not mounted: {reason}; start a daemon"),
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use erofs_reader::ImageBuilder;

/// How an image can be (or was) mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// File-backed, no daemon: the image file plus these blob files as `device=`, in
    /// device-table order.
    FileBacked {
        /// The blob files.
        devices: Vec<PathBuf>,
    },
    /// Not every blob is local: only EROFS over fscache with a daemon can serve it.
    NeedsFscache {
        /// Why (which blob is missing).
        reason: String,
    },
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::FileBacked { devices } if devices.is_empty() => {
                f.write_str("file-backed (no daemon)")
            }
            Mode::FileBacked { devices } => {
                write!(f, "file-backed (no daemon), devices ")?;
                for (i, d) in devices.iter().enumerate() {
                    write!(f, "{}{}", if i > 0 { ", " } else { "" }, d.display())?;
                }
                Ok(())
            }
            Mode::NeedsFscache { reason } => write!(f, "needs EROFS over fscache: {reason}"),
        }
    }
}

/// Decide how `image` can be mounted: file-backed if every extra device (blob) it lists is a
/// file named by its tag in `blob_dir` (and at least as long as the device table says), else
/// [`Mode::NeedsFscache`] naming the first missing blob.
///
/// # Errors
///
/// The image cannot be read, or its device table is corrupt; a device tag that cannot name a
/// file; an image with devices but no `blob_dir`.
pub fn plan(image: &Path, blob_dir: Option<&Path>) -> io::Result<Mode> {
    let img = ImageBuilder::open(image)
        .and_then(|b| b.build())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", image.display()),
            )
        })?;
    let block_size = img.block_size();
    let mut devices = Vec::new();
    for dev in img.devices() {
        let tag = dev.tag_str();
        let Some(dir) = blob_dir else {
            return Ok(Mode::NeedsFscache {
                reason: format!("the image needs blob {tag:?} and no blob directory was given"),
            });
        };
        if tag.is_empty() || tag.contains('/') || tag == "." || tag == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "device {} has tag {tag:?}, which cannot name a file",
                    dev.index
                ),
            ));
        }
        let path = dir.join(&*tag);
        let need = dev.blocks.saturating_mul(block_size);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() >= need => devices.push(path),
            Ok(m) if m.is_file() => {
                return Ok(Mode::NeedsFscache {
                    reason: format!(
                        "blob {} has {} bytes of the {need} the image maps",
                        path.display(),
                        m.len()
                    ),
                });
            }
            _ => {
                return Ok(Mode::NeedsFscache {
                    reason: format!("blob {tag:?} is not in {}", dir.display()),
                });
            }
        }
    }
    Ok(Mode::FileBacked { devices })
}

/// `device=P1,device=P2,...`, refusing paths that would break the option string.
fn device_options(devices: &[PathBuf]) -> io::Result<String> {
    let mut opts = Vec::new();
    for d in devices {
        let s = d
            .to_str()
            .filter(|s| !s.contains(',') && !s.is_empty())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: a device path must be UTF-8 without ','", d.display()),
                )
            })?;
        opts.push(format!("device={s}"));
    }
    Ok(opts.join(","))
}

/// Mount `image` on `target` read-only as [`plan`] decides and the kernel allows: file-backed
/// when every blob is in `blob_dir` and the kernel accepts a file-backed mount. Returns the mode
/// it chose; for [`Mode::NeedsFscache`] (a blob is missing, or the kernel answered `ENOTBLK`: no
/// file-backed EROFS, or the image on a stacked filesystem) nothing is mounted.
///
/// # Errors
///
/// As [`plan`]; other `mount(2)` errors, with context.
pub fn mount_image(image: &Path, blob_dir: Option<&Path>, target: &Path) -> io::Result<Mode> {
    let mode = plan(image, blob_dir)?;
    if let Mode::FileBacked { devices } = &mode {
        match file_backed(image, devices, target, false)? {
            Ok(()) => {}
            // What the kernel supports is found by asking it.
            Err((nix::errno::Errno::ENOTBLK, message)) => {
                return Ok(Mode::NeedsFscache { reason: message });
            }
            Err((errno, message)) => {
                return Err(io::Error::new(io::Error::from(errno).kind(), message));
            }
        }
    }
    Ok(mode)
}

/// `mount(IMAGE, TARGET, "erofs", MS_RDONLY, "device=...")`: a file-backed mount.
///
/// # Errors
///
/// The kernel's error, explained for `ENOTBLK` and `ENODEV`; device paths with `,`.
pub fn mount_file_backed(image: &Path, devices: &[PathBuf], target: &Path) -> io::Result<()> {
    file_backed(image, devices, target, false)?
        .map_err(|(errno, message)| io::Error::new(io::Error::from(errno).kind(), message))
}

/// The mount call; the outer error is ours (bad options), the inner one the kernel's errno
/// with an explanation.
fn file_backed(
    image: &Path,
    devices: &[PathBuf],
    target: &Path,
    direct_io: bool,
) -> io::Result<Result<(), (nix::errno::Errno, String)>> {
    use nix::mount::{MsFlags, mount};
    let mut opts = device_options(devices)?;
    if direct_io {
        if !opts.is_empty() {
            opts.push(',');
        }
        opts.push_str("directio");
    }
    let data = (!opts.is_empty()).then_some(opts.as_str());
    Ok(
        mount(Some(image), target, Some("erofs"), MsFlags::MS_RDONLY, data).map_err(|e| {
            let why = match e {
                nix::errno::Errno::ENOTBLK => {
                    ": the kernel cannot mount EROFS from a file (it needs Linux 6.12+ with \
                     EROFS_FS_BACKED_BY_FILE), or the image lies on a stacked filesystem \
                     such as overlayfs"
                }
                nix::errno::Errno::ENODEV => ": the kernel has no EROFS",
                _ => "",
            };
            let message = format!(
                "mounting {} on {}: {e}{why}",
                image.display(),
                target.display()
            );
            (e, message)
        }),
    )
}

/// [`mount_file_backed`], then set the new mount's readahead to `bytes` (rounded down to KiB;
/// 0 leaves the kernel's 128 KiB). Files opened afterwards read ahead this far.
///
/// Why it matters: EROFS reads a backing file in requests of at most 16 page-cache folios, so
/// with 4 KiB folios in 64 KiB requests; a larger readahead brings larger folios and so
/// fewer, larger requests. Through [`crate::fanotify`] each request on an incomplete backing
/// file is a pre-content event (a round trip to the daemon), so this cuts the events of a
/// sequential read several times (`erofs-ondemand fanotify --mount-readahead`). Without a
/// daemon there is no such gain: in the 7.2 VM a plain file-backed read of 48 MiB was slower at
/// 4 MiB than at 128 KiB in five runs of eight (DESIGN.md, "The mount's readahead").
///
/// The knob is the `read_ahead_kb` of the mount's own backing device info
/// (`/sys/class/bdi/erofs-N`, made with the mount): the one named by the filesystem's sysfs
/// name (`FS_IOC_GETFSSYSFSPATH`: `erofs/erofs-N` on Linux 6.12-6.18), else the one device
/// info named `erofs-N` that appeared during the mount (Linux 7.2 names the filesystem
/// `erofs/MAJOR:MINOR`; a loop device or another filesystem made meanwhile is not taken).
///
/// # Errors
///
/// The mount's. Once mounted, the readahead is best effort: a kernel that does not let us
/// set it (none found, or two mounts made at the same moment) is logged as a warning.
pub fn mount_file_backed_with_readahead(
    image: &Path,
    devices: &[PathBuf],
    target: &Path,
    bytes: u64,
) -> io::Result<()> {
    with_readahead(target, bytes, || mount_file_backed(image, devices, target))
}

/// [`mount_file_backed_with_readahead`] with the `directio` option: EROFS reads the backing
/// files with direct I/O (Linux 6.13+), so their bytes go from the disk to the EROFS page
/// cache without a copy in the backing files' page cache. For backing files that a daemon
/// writes with direct I/O ([`crate::fanotify::FanotifyDaemon::with_direct_io`]), as EROFS
/// over cachefiles reads and writes its cache files. A kernel that refuses the option
/// (`EINVAL`) gets the mount without it.
///
/// # Errors
///
/// As [`mount_file_backed_with_readahead`].
pub fn mount_file_backed_direct(
    image: &Path,
    devices: &[PathBuf],
    target: &Path,
    bytes: u64,
) -> io::Result<()> {
    with_readahead(target, bytes, || {
        match file_backed(image, devices, target, true)? {
            Err((nix::errno::Errno::EINVAL, message)) => {
                log::info!("{message}; mounting without directio");
                mount_file_backed(image, devices, target)
            }
            other => other
                .map_err(|(errno, message)| io::Error::new(io::Error::from(errno).kind(), message)),
        }
    })
}

/// Mount with `mount`, then set the new mount's readahead ([`mount_file_backed_with_readahead`]).
fn with_readahead(
    target: &Path,
    bytes: u64,
    mount: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let before = bdi_names();
    mount()?;
    if bytes > 0 {
        match set_read_ahead(target, bytes, &before) {
            Ok(knob) => log::info!(
                "{}: mount readahead set to {} KiB ({})",
                target.display(),
                bytes >> 10,
                knob.display()
            ),
            Err(e) => log::warn!("{}: mount readahead not set: {e}", target.display()),
        }
    }
    Ok(())
}

const BDI_DIR: &str = "/sys/class/bdi";

/// The backing device infos' names now (`/sys/class/bdi`; empty if it cannot be read).
fn bdi_names() -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(BDI_DIR)
        .map(|dir| dir.filter_map(|e| Some(e.ok()?.file_name())).collect())
        .unwrap_or_default()
}

/// Write `bytes / 1024` to the `read_ahead_kb` of the EROFS mount at `target` (`before`: the
/// device infos before it was mounted); returns the file written.
fn set_read_ahead(
    target: &Path,
    bytes: u64,
    before: &std::collections::BTreeSet<std::ffi::OsString>,
) -> io::Result<PathBuf> {
    let unsupported = |why: String| io::Error::new(io::ErrorKind::Unsupported, why);
    let dir = std::fs::File::open(target)?;
    let named = crate::sys::fs_sysfs_path(std::os::fd::AsFd::as_fd(&dir))
        .ok()
        .and_then(|sysfs| {
            let name = sysfs.strip_prefix("erofs/")?;
            let usable = !name.is_empty() && !name.contains('/') && name != "..";
            usable.then(|| Path::new(BDI_DIR).join(name))
        })
        .filter(|bdi| bdi.join("read_ahead_kb").exists());
    let bdi = match named {
        Some(bdi) => bdi,
        None => {
            let new = new_erofs_bdis(before, bdi_names());
            match new.as_slice() {
                [one] => Path::new(BDI_DIR).join(one),
                [] => {
                    return Err(unsupported(format!(
                        "no erofs-N backing device info appeared in {BDI_DIR} during the mount"
                    )));
                }
                _ => {
                    return Err(unsupported(format!(
                        "{} erofs-N device infos appeared in {BDI_DIR} during the mount: {new:?}",
                        new.len()
                    )));
                }
            }
        }
    };
    let knob = bdi.join("read_ahead_kb");
    std::fs::write(&knob, format!("{}\n", bytes / 1024))
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", knob.display())))?;
    Ok(knob)
}

/// The names in `after` that are not in `before` and that a file-backed EROFS mount's own
/// backing device info can have: `erofs-N`, `N` a decimal number (`super_setup_bdi` names it
/// after the filesystem type and a global sequence number; seen on the 6.18 host and in the
/// 7.2 VM). A loop device (`7:N`), a FUSE mount (`0:N`) or another filesystem's (`btrfs-N`)
/// made at the same moment is never taken for the mount's.
fn new_erofs_bdis(
    before: &std::collections::BTreeSet<std::ffi::OsString>,
    after: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    after
        .into_iter()
        .filter(|n| !before.contains(n))
        .filter(|n| {
            n.to_str()
                .and_then(|n| n.strip_prefix("erofs-"))
                .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// `mount("none", TARGET, "erofs", MS_RDONLY, "fsid=FSID[,domain_id=D][,device=NAME...]")`: an
/// EROFS-over-fscache mount. A cache must be bound and a daemon serving it, or the mount
/// waits for the daemon's answer (and fails once the cache is gone).
///
/// # Errors
///
/// The kernel's error; ids containing `,` are refused.
pub fn mount_fscache(
    fsid: &str,
    domain_id: Option<&str>,
    device_names: &[&str],
    target: &Path,
) -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    let bad = |s: &str| s.is_empty() || s.contains(',') || s.contains('/');
    if bad(fsid) || domain_id.is_some_and(bad) || device_names.iter().any(|d| bad(d)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fsid, domain_id and device names must be non-empty, without ',' or '/'",
        ));
    }
    let mut opts = format!("fsid={fsid}");
    if let Some(d) = domain_id {
        opts.push_str(&format!(",domain_id={d}"));
    }
    for d in device_names {
        opts.push_str(&format!(",device={d}"));
    }
    mount(
        Some("none"),
        target,
        Some("erofs"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("mount -o {opts}: {e}")))
}

/// `mount("overlay", TARGET, "overlay", MS_RDONLY, "lowerdir=L1:L2:...")`: a read-only
/// overlay of `lowers`, the **top** layer first (at least two; with one, mount it directly).
///
/// # Errors
///
/// The kernel's error; fewer than two layers, or a path holding `:`, `,` or a backslash.
pub fn mount_overlay(lowers: &[PathBuf], target: &Path) -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    let mut dirs = Vec::with_capacity(lowers.len());
    for l in lowers {
        match l.to_str() {
            Some(s) if !s.is_empty() && !s.contains([':', ',', '\\']) => dirs.push(s),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "overlay layer {}: a UTF-8 path without ':', ',' or '\\' is needed",
                        l.display()
                    ),
                ));
            }
        }
    }
    if dirs.len() < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an overlay with no upper layer needs at least two lower layers",
        ));
    }
    let opts = format!("lowerdir={}", dirs.join(":"));
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount -t overlay -o {opts} {}: {e}", target.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_options_are_checked() {
        assert_eq!(device_options(&[]).unwrap(), "");
        assert_eq!(
            device_options(&["/a".into(), "/b c".into()]).unwrap(),
            "device=/a,device=/b c"
        );
        assert!(device_options(&["/a,b".into()]).is_err());
    }

    #[test]
    fn only_a_new_erofs_bdi_is_the_mounts() {
        let names = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        let before: std::collections::BTreeSet<_> = names(&["7:0", "254:0", "erofs-1", "0:40"])
            .into_iter()
            .collect();
        let new = |after: &[&str]| new_erofs_bdis(&before, names(after));
        // The mount's own: erofs-N, new.
        assert_eq!(
            new(&["7:0", "254:0", "erofs-1", "0:40", "erofs-2"]),
            names(&["erofs-2"])
        );
        // A loop device, a FUSE mount, another filesystem's bdi made meanwhile: not taken.
        assert_eq!(
            new(&["7:0", "7:1", "0:41", "btrfs-3", "erofs-1", "erofs-12"]),
            names(&["erofs-12"])
        );
        assert_eq!(new(&["7:0", "7:1", "0:41", "erofs-1"]), names(&[]));
        // Names EROFS never gives its bdi.
        assert_eq!(
            new(&[
                "erofs-",
                "erofs-1a",
                "erofs-+1",
                "xerofs-3",
                "erofs-3/..",
                "erofs"
            ]),
            names(&[])
        );
        // Two EROFS mounts at the same moment: both are returned (the caller sets neither).
        assert_eq!(new(&["erofs-2", "erofs-3"]), names(&["erofs-2", "erofs-3"]));
        // One that existed before is not new.
        assert_eq!(new(&["erofs-1"]), names(&[]));
    }

    #[test]
    fn plan_needs_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not-an-image");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        assert_eq!(
            plan(&p, None).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn fscache_ids_are_checked() {
        let e = mount_fscache("a,b", None, &[], Path::new("/nonexistent")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = mount_fscache("a", Some(""), &[], Path::new("/nonexistent")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
