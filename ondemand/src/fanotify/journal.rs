//! The journal of events in progress, for failover: a successor must answer the events its
//! predecessor read and never answered, or their readers wait forever.
//!
//! What the 7.2 kernel does (test `vm_fanotify::failover_with_an_unanswered_event_on_7_2`):
//! an event a daemon has read waits for a response written to the group with the event's fd
//! *number*, whoever writes it. When the daemon dies, the event's fd closes with it, but the
//! event stays pending as long as the group lives; with the group's fd kept by a holder
//! (`erofs-ondemand hold`), that is forever: the reader hangs, and with it the EROFS read
//! that needed those bytes (the mount's other readers of that file block behind it). The
//! successor reads only events queued after the death. Without a holder the group dies with
//! the daemon and the kernel allows every pending event: the reader gets zeros from the holes.
//!
//! So a daemon under a holder writes a slot indexed by the event's fd number for every event
//! of a `read(2)`, right after that read and before it serves any of them (an event that
//! waits in the worker behind another one's fill is journaled too): the backing file
//! (device, inode) and the range; and clears it once the event is answered. A successor
//! reads the slots left set, keeps those fd numbers from being given to its own events (see
//! [`crate::sys::reserve_fd_number`]), fills each range like any event, and answers it by
//! number.
//!
//! The window left: a daemon killed between the return of a `read(2)` and the journal writes
//! for its events (taking each fd, one `fstat` and one `pwrite` per event; no fill in
//! between) leaves those events pending, and their readers wait. It cannot be closed from
//! here: the fd numbers are known only once `read(2)` has returned, and the 7.2 kernel gives
//! no other reader of the group a way to learn a dead reader's events (their numbers and
//! ranges) nor puts them back in the queue. Answering numbers blindly would allow reads of
//! holes (zeros) unless every marked file were completed first.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::FileRange;

/// Marks a slot in use.
const MAGIC: u32 = 0x4576_4a6e;

/// Event fds above this are not journaled (the slot file stays at most 48 MiB, sparse).
const MAX_FD: i32 = 1 << 20;

/// One event in progress (48 bytes, host-endian: the journal never leaves the machine).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Slot {
    magic: u32,
    fd: i32,
    dev: u64,
    ino: u64,
    offset: u64,
    count: u64,
    has_range: u32,
    pad: u32,
}
const _: () = assert!(size_of::<Slot>() == 48);

/// An event a dead daemon left unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The event's fd number, which its response names.
    pub(crate) fd: i32,
    /// The backing file's device and inode.
    pub(crate) file: (u64, u64),
    /// The event's range record.
    pub(crate) range: Option<FileRange>,
}

/// The journal file.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
}

impl Journal {
    /// Open (or create) the journal at `path`.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Journal { file })
    }

    fn at(fd: i32) -> Option<u64> {
        (0..MAX_FD)
            .contains(&fd)
            .then(|| u64::from(fd.unsigned_abs()) * size_of::<Slot>() as u64)
    }

    /// Record an event before serving it.
    pub(crate) fn note(&self, p: Pending) {
        let Some(at) = Self::at(p.fd) else {
            log::warn!("event fd {} too high for the journal", p.fd);
            return;
        };
        let slot = Slot {
            magic: MAGIC,
            fd: p.fd,
            dev: p.file.0,
            ino: p.file.1,
            offset: p.range.map_or(0, |r| r.offset),
            count: p.range.map_or(0, |r| r.count),
            has_range: u32::from(p.range.is_some()),
            pad: 0,
        };
        if let Err(e) = self.file.write_all_at(slot.as_bytes(), at) {
            log::warn!("event journal: {e}");
        }
    }

    /// Forget the event of fd `fd` (answered).
    pub(crate) fn clear(&self, fd: i32) {
        if let Some(at) = Self::at(fd)
            && let Err(e) = self.file.write_all_at(Slot::default().as_bytes(), at)
        {
            log::warn!("event journal: {e}");
        }
    }

    /// The events left in progress.
    pub(crate) fn pending(&self) -> io::Result<Vec<Pending>> {
        let len = self
            .file
            .metadata()?
            .len()
            .min(Self::at(MAX_FD - 1).unwrap_or(0) + 48);
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes
            .chunks_exact(size_of::<Slot>())
            .enumerate()
            .filter_map(|(i, raw)| {
                let s = Slot::read_from_bytes(raw).ok()?;
                // A slot is trusted only where it belongs.
                (s.magic == MAGIC && usize::try_from(s.fd).ok() == Some(i)).then_some(Pending {
                    fd: s.fd,
                    file: (s.dev, s.ino),
                    range: (s.has_range != 0).then_some(FileRange {
                        offset: s.offset,
                        count: s.count,
                    }),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let j = Journal::open(&path).unwrap();
        let a = Pending {
            fd: 7,
            file: (1, 2),
            range: Some(FileRange {
                offset: 4096,
                count: 8192,
            }),
        };
        let b = Pending {
            fd: 3,
            file: (1, 5),
            range: None,
        };
        j.note(a);
        j.note(b);
        j.note(Pending { fd: -1, ..a });
        assert_eq!(Journal::open(&path).unwrap().pending().unwrap(), [b, a]);
        j.clear(3);
        assert_eq!(j.pending().unwrap(), [a]);
        // A slot whose fd does not match its place is not trusted.
        let mut bad = Slot::read_from_bytes(&[0u8; 48][..]).unwrap();
        bad.magic = MAGIC;
        bad.fd = 9;
        j.file.write_all_at(bad.as_bytes(), 48).unwrap();
        assert_eq!(j.pending().unwrap(), [a]);
    }
}
