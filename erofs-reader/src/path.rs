//! Path resolution and the `std::fs`-like path API.
//!
//! Paths are resolved from the image root (a leading `/` is optional). `.` is skipped,
//! `..` goes back to the directory the walk came from (at the root it stays there), the
//! way the kernel walks paths, without trusting on-disk `..` entries. Symlinks are
//! followed (absolute targets restart at the image root) up to
//! [`Limits::max_symlinks`](crate::Limits) times, and no more than
//! [`Limits::max_components`](crate::Limits) components are walked in total.

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Context, CorruptKind, Error, Result};
use crate::inner::Inner;
use crate::inode::Inode;

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Inner {
    pub(crate) fn resolve(&self, path: &Path, follow_last: bool) -> Result<Inode> {
        let limits = self.limits;
        let root = self.inode(self.sb.root_nid())?;
        // The chain of directories from the root to the current one.
        let mut stack: Vec<Inode> = vec![root];
        let mut pending: VecDeque<Vec<u8>> = split(path.as_os_str().as_bytes());
        let mut walked: Vec<u8> = Vec::new();
        let (mut hops, mut steps) = (0u32, 0u32);
        while let Some(comp) = pending.pop_front() {
            // Checked against the limit right below; saturating keeps the check exact.
            steps = steps.saturating_add(1);
            if steps > limits.max_components {
                return Err(Error::corrupt_as(
                    CorruptKind::PathLimit,
                    format!(
                        "resolving {} walks more than {} components",
                        path.display(),
                        limits.max_components
                    ),
                    Context::NONE,
                ));
            }
            // The stack is never empty: it starts with the root and `..` keeps it.
            let cur = stack.last().cloned().ok_or_else(|| {
                Error::corrupt_as(CorruptKind::PathLimit, "empty walk", Context::NONE)
            })?;
            if comp == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                walked.extend_from_slice(b"/..");
                continue;
            }
            walked.push(b'/');
            walked.extend_from_slice(&comp);
            if !cur.metadata().is_dir() {
                return Err(Error::NotADirectory(show(&walked)));
            }
            let Some(entry) = self.lookup_in(&cur, &comp)? else {
                return Err(Error::NotFound(show(&walked)));
            };
            let inode = self.inode(entry.nid())?;
            let last = pending.is_empty();
            if inode.metadata().is_symlink() && (!last || follow_last) {
                hops = hops.saturating_add(1);
                if hops > limits.max_symlinks {
                    return Err(Error::corrupt_as(
                        CorruptKind::PathLimit,
                        format!(
                            "too many levels of symbolic links resolving {}",
                            path.display()
                        ),
                        Context::nid(inode.nid().0),
                    ));
                }
                let target = self.read_link_inode(&inode)?;
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                for c in split(&target).into_iter().rev() {
                    pending.push_front(c);
                }
                continue;
            }
            stack.push(inode);
        }
        stack
            .pop()
            .ok_or_else(|| Error::corrupt_as(CorruptKind::PathLimit, "empty walk", Context::NONE))
    }
}

fn split(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}
