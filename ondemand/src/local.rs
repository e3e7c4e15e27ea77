//! [`LocalDirServer`]: serves objects from files in one directory.
//!
//! The cookie key names the file: the `fsid` for the bootstrap (primary) blob, the device tag
//! or `device=` name for each extra blob. The volume key is not used, so one directory serves
//! every fsid and domain. A key that is not a plain file name (empty, `.`, `..`, or holding
//! `/` or NUL) is refused with `EINVAL` and logged, so the kernel cannot make the daemon open
//! anything outside the directory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::server::{ObjectKey, OnDemandServer, Opened};

/// Serves each object from the file named by its cookie key in one directory.
#[derive(Debug, Clone)]
pub struct LocalDirServer {
    dir: PathBuf,
}

impl LocalDirServer {
    /// Serve blobs from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalDirServer { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for a cookie key, if the key is a plain file name (a refused key is logged).
    ///
    /// # Errors
    ///
    /// `EINVAL` (as an OS error) for a key that is empty, `.`, `..`, or holds `/` or NUL.
    pub fn path_for(&self, cookie_key: &[u8]) -> io::Result<PathBuf> {
        crate::blob_store::LocalDirStore::new(&self.dir).path_for(cookie_key)
    }
}

impl OnDemandServer for LocalDirServer {
    type Object = File;

    fn open(&self, key: &ObjectKey<'_>) -> io::Result<Opened<File>> {
        let path = self.path_for(key.cookie_key)?;
        let file = File::open(&path).inspect_err(|e| {
            log::warn!("cannot open blob {}: {e}", path.display());
        })?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            log::warn!("blob {} is not a regular file", path.display());
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        Ok(Opened {
            object: file,
            size: meta.len(),
        })
    }

    fn read_at(&self, object: &File, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        object.read_at(buf, off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_keys_that_are_not_plain_names() {
        let s = LocalDirServer::new("/blobs");
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"/etc/passwd",
            b"../x",
            b"a\0b",
        ] {
            let e = s.path_for(bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(nix::libc::EINVAL), "{bad:?}");
        }
        assert_eq!(s.path_for(b"boot..1").unwrap(), Path::new("/blobs/boot..1"));
        assert_eq!(s.path_for(b".hidden").unwrap(), Path::new("/blobs/.hidden"));
    }

    #[test]
    fn opens_and_reads_blobs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blob1"), b"hello world").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let s = LocalDirServer::new(dir.path());
        let key = |c: &'static [u8]| ObjectKey {
            volume_key: b"erofs,x",
            cookie_key: c,
        };
        let opened = s.open(&key(b"blob1")).unwrap();
        assert_eq!(opened.size, 11);
        let mut buf = [0u8; 5];
        s.fill(&opened.object, 6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        let e = s.fill(&opened.object, 8, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            s.open(&key(b"missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            s.open(&key(b"sub")).unwrap_err().raw_os_error(),
            Some(nix::libc::EINVAL)
        );
        assert_eq!(
            s.open(&key(b"..")).unwrap_err().raw_os_error(),
            Some(nix::libc::EINVAL)
        );
    }
}
