//! The libraries an ELF object needs, read from its bytes in three steps as they arrive:
//! the header and program headers ([`Head::parse`], the file's first bytes), the dynamic
//! section ([`Head::dynamic`], where `PT_DYNAMIC` says), and the names in its string table
//! ([`Dynamic::names`], the span [`Dynamic::strings`] says).
//!
//! Cold prediction's ELF rule ([`super::Rules::needed`]) uses it to fetch a program's libraries as soon as
//! the program's own bytes are in, instead of one library after another as the dynamic
//! loader maps them. The bytes come from an image: hostile input. Every offset is checked,
//! every count capped ([`MAX_NEEDED`], [`MAX_NAME`], [`MAX_PHNUM`], [`MAX_DYN`]), and a
//! malformed object is a typed [`ElfError`], never a panic. 64-bit little-endian objects
//! only (x86-64, AArch64, ...); others are [`ElfError::Unsupported`].
//!
//! ```
//! use ondemand::predict::elf;
//!
//! let ls = std::fs::read("/bin/ls").unwrap();
//! let needed = elf::needed(&ls).unwrap();
//! assert!(needed.libraries.iter().any(|l| l.starts_with(b"libc.so")));
//! ```

use std::ops::Range;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// Most `DT_NEEDED` entries read from one object.
pub const MAX_NEEDED: usize = 64;
/// Longest library name or run path read (bytes, without the NUL).
pub const MAX_NAME: usize = 255;
/// Most program headers read.
pub const MAX_PHNUM: usize = 64;
/// Most dynamic entries read.
pub const MAX_DYN: usize = 1024;
/// Bytes of the file's head [`Head::parse`] may need: the ELF header and program headers
/// this far into the file (every linker puts them right after the header).
pub const HEAD_MAX: u64 = 64 << 10;
/// Longest interpreter path read (`PT_INTERP`, with its NUL: `PATH_MAX`).
pub const MAX_INTERP: usize = 4096;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// `Elf64_Ehdr`.
#[doc(alias = "Elf64_Ehdr")]
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Ehdr {
    e_ident: [u8; 16],
    e_type: U16,
    e_machine: U16,
    e_version: U32,
    e_entry: U64,
    e_phoff: U64,
    e_shoff: U64,
    e_flags: U32,
    e_ehsize: U16,
    e_phentsize: U16,
    e_phnum: U16,
    e_shentsize: U16,
    e_shnum: U16,
    e_shstrndx: U16,
}
const _: () = assert!(size_of::<Ehdr>() == 64);

/// `Elf64_Phdr`.
#[doc(alias = "Elf64_Phdr")]
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Phdr {
    p_type: U32,
    p_flags: U32,
    p_offset: U64,
    p_vaddr: U64,
    p_paddr: U64,
    p_filesz: U64,
    p_memsz: U64,
    p_align: U64,
}
const _: () = assert!(size_of::<Phdr>() == 56);

/// `Elf64_Dyn`.
#[doc(alias = "Elf64_Dyn")]
#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Dyn {
    d_tag: U64,
    d_val: U64,
}
const _: () = assert!(size_of::<Dyn>() == 16);

/// Why an object's libraries could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF object (no `\x7fELF` magic).
    #[error("not an ELF object")]
    NotElf,
    /// An ELF object this parser does not read (32-bit, big-endian, not an executable or
    /// shared object).
    #[error("unsupported ELF object: {0}")]
    Unsupported(&'static str),
    /// The bytes given end before what is needed.
    #[error("truncated: {what} needs {need} bytes, {have} given")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// The bytes it needs.
        need: u64,
        /// The bytes given.
        have: u64,
    },
    /// A field is out of range.
    #[error("corrupt ELF object: {0}")]
    Corrupt(&'static str),
}

/// One `PT_LOAD` segment: where its file bytes are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

/// An ELF object's header and program headers ([`Head::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    machine: u16,
    dynamic: Option<Range<u64>>,
    interp: Option<Range<u64>>,
    loads: Vec<Load>,
}

/// `bytes[range]`, or [`ElfError::Truncated`].
fn slice<'a>(bytes: &'a [u8], range: Range<u64>, what: &'static str) -> Result<&'a [u8], ElfError> {
    let have = bytes.len() as u64;
    if range.start > range.end || range.end > have {
        return Err(ElfError::Truncated {
            what,
            need: range.end,
            have,
        });
    }
    // Both ends are at most `bytes.len()`: they fit in usize.
    Ok(&bytes[range.start as usize..range.end as usize])
}

impl Head {
    /// Read the ELF header and program headers from the file's first bytes (at most
    /// [`HEAD_MAX`] are needed; fewer may do).
    ///
    /// # Errors
    ///
    /// [`ElfError::NotElf`] without the magic; [`ElfError::Truncated`] if the program
    /// headers lie past `bytes`; [`ElfError::Unsupported`] for a 32-bit or big-endian object
    /// or one that is neither an executable nor a shared object; [`ElfError::Corrupt`] for
    /// header fields out of range.
    pub fn parse(bytes: &[u8]) -> Result<Head, ElfError> {
        if bytes.len() < 4 || bytes[..4] != *b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let (ehdr, _) = Ehdr::read_from_prefix(bytes).map_err(|_| ElfError::Truncated {
            what: "ELF header",
            need: 64,
            have: bytes.len() as u64,
        })?;
        if ehdr.e_ident[4] != 2 {
            return Err(ElfError::Unsupported("not 64-bit"));
        }
        if ehdr.e_ident[5] != 1 {
            return Err(ElfError::Unsupported("not little-endian"));
        }
        if !matches!(ehdr.e_type.get(), ET_EXEC | ET_DYN) {
            return Err(ElfError::Unsupported("not an executable or shared object"));
        }
        let phnum = usize::from(ehdr.e_phnum.get());
        if phnum > MAX_PHNUM {
            return Err(ElfError::Corrupt("too many program headers"));
        }
        if phnum > 0 && usize::from(ehdr.e_phentsize.get()) != size_of::<Phdr>() {
            return Err(ElfError::Corrupt("program header size"));
        }
        let start = ehdr.e_phoff.get();
        // At most 64 * 56 bytes: no overflow once `start` is bounded.
        if start > HEAD_MAX {
            return Err(ElfError::Corrupt("program headers far from the head"));
        }
        let table = slice(
            bytes,
            start..start + (phnum * size_of::<Phdr>()) as u64,
            "program headers",
        )?;
        let mut dynamic = None;
        let mut interp = None;
        let mut loads = Vec::new();
        for raw in table.chunks_exact(size_of::<Phdr>()) {
            // `chunks_exact` gives whole headers.
            let Ok(p) = Phdr::ref_from_bytes(raw) else {
                continue;
            };
            let (offset, filesz) = (p.p_offset.get(), p.p_filesz.get());
            let end = offset
                .checked_add(filesz)
                .ok_or(ElfError::Corrupt("segment past 2^64"))?;
            match p.p_type.get() {
                PT_LOAD => loads.push(Load {
                    vaddr: p.p_vaddr.get(),
                    offset,
                    filesz,
                }),
                PT_DYNAMIC if dynamic.is_none() => dynamic = Some(offset..end),
                PT_INTERP if interp.is_none() => interp = Some(offset..end),
                _ => {}
            }
        }
        Ok(Head {
            machine: ehdr.e_machine.get(),
            dynamic,
            interp,
            loads,
        })
    }

    /// The object's `e_machine` (62: x86-64, 183: AArch64).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// Where the dynamic section is in the file (`PT_DYNAMIC`, at most [`MAX_DYN`] entries
    /// of it), if the object has one (a static executable has none).
    pub fn dynamic_range(&self) -> Option<Range<u64>> {
        let r = self.dynamic.clone()?;
        let cap = (MAX_DYN * size_of::<Dyn>()) as u64;
        Some(r.start..r.end.min(r.start.saturating_add(cap)))
    }

    /// Where the program interpreter's path is in the file (`PT_INTERP`, at most
    /// [`MAX_INTERP`] bytes of it), if the object names one (a dynamically linked
    /// executable does; a shared library or a static executable does not).
    pub fn interp_range(&self) -> Option<Range<u64>> {
        let r = self.interp.clone()?;
        Some(r.start..r.end.min(r.start.saturating_add(MAX_INTERP as u64)))
    }

    /// The interpreter's path: `bytes` are the file's bytes over
    /// [`interp_range`](Self::interp_range), up to the first NUL.
    ///
    /// # Errors
    ///
    /// [`ElfError::Corrupt`] for no `PT_INTERP`, an empty path or one without its NUL
    /// within [`MAX_INTERP`] bytes; [`ElfError::Truncated`] if `bytes` are short.
    pub fn interpreter(&self, bytes: &[u8]) -> Result<Vec<u8>, ElfError> {
        let range = self
            .interp_range()
            .ok_or(ElfError::Corrupt("no interpreter"))?;
        let bytes = slice(bytes, 0..range.end - range.start, "interpreter")?;
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(ElfError::Corrupt("interpreter path not terminated"))?;
        if end == 0 {
            return Err(ElfError::Corrupt("empty interpreter path"));
        }
        Ok(bytes[..end].to_vec())
    }

    /// The file offset of virtual address `vaddr`, through the `PT_LOAD` segment that maps
    /// it from the file.
    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads.iter().find_map(|l| {
            let delta = vaddr.checked_sub(l.vaddr)?;
            (delta < l.filesz).then(|| l.offset.checked_add(delta))?
        })
    }

    /// Read the dynamic section: `bytes` are the file's bytes over
    /// [`dynamic_range`](Self::dynamic_range).
    ///
    /// # Errors
    ///
    /// [`ElfError::Corrupt`] for no `PT_DYNAMIC`, a string table no `PT_LOAD` maps, more
    /// than [`MAX_NEEDED`] libraries; [`ElfError::Truncated`] if `bytes` are short.
    pub fn dynamic(&self, bytes: &[u8]) -> Result<Dynamic, ElfError> {
        let range = self
            .dynamic_range()
            .ok_or(ElfError::Corrupt("no dynamic section"))?;
        let want = range.end - range.start;
        let bytes = slice(bytes, 0..want, "dynamic section")?;
        let mut needed = Vec::new();
        let (mut strtab, mut strsz, mut rpath, mut runpath) = (None, None, None, None);
        for raw in bytes.chunks_exact(size_of::<Dyn>()) {
            let Ok(d) = Dyn::ref_from_bytes(raw) else {
                continue;
            };
            let val = d.d_val.get();
            match d.d_tag.get() {
                DT_NULL => break,
                DT_NEEDED if needed.len() >= MAX_NEEDED => {
                    return Err(ElfError::Corrupt("too many needed libraries"));
                }
                DT_NEEDED => needed.push(val),
                DT_STRTAB => strtab = Some(val),
                DT_STRSZ => strsz = Some(val),
                DT_RPATH => rpath = Some(val),
                DT_RUNPATH => runpath = Some(val),
                _ => {}
            }
        }
        // The loader ignores DT_RPATH when DT_RUNPATH is there.
        let path = runpath.or(rpath);
        if needed.is_empty() && path.is_none() {
            return Ok(Dynamic {
                strtab: 0,
                strsz: 0,
                needed,
                path,
            });
        }
        let strtab = strtab.ok_or(ElfError::Corrupt("no DT_STRTAB"))?;
        let strsz = strsz.ok_or(ElfError::Corrupt("no DT_STRSZ"))?;
        let strtab = self.file_offset(strtab).ok_or(ElfError::Corrupt(
            "string table outside the file's segments",
        ))?;
        strtab
            .checked_add(strsz)
            .ok_or(ElfError::Corrupt("string table past 2^64"))?;
        if needed.iter().chain(path.iter()).any(|&o| o >= strsz) {
            return Err(ElfError::Corrupt("name past the string table"));
        }
        Ok(Dynamic {
            strtab,
            strsz,
            needed,
            path,
        })
    }
}

/// An object's dynamic section, read ([`Head::dynamic`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dynamic {
    strtab: u64,
    strsz: u64,
    /// `DT_NEEDED` offsets in the string table.
    needed: Vec<u64>,
    /// `DT_RUNPATH` (or `DT_RPATH`) offset.
    path: Option<u64>,
}

/// The libraries an object needs ([`needed`], [`Dynamic::names`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// `DT_NEEDED` names, in order.
    pub libraries: Vec<Vec<u8>>,
    /// `DT_RUNPATH` (or `DT_RPATH`) directories, in order (`$ORIGIN` not substituted).
    pub run_path: Vec<Vec<u8>>,
}

impl Dynamic {
    /// The span of the file the names are in (empty if the object needs nothing): from the
    /// first name to at most [`MAX_NAME`] + 1 bytes past the last one, within the string
    /// table.
    pub fn strings(&self) -> Range<u64> {
        let offs = self.needed.iter().chain(self.path.iter());
        let (Some(lo), Some(hi)) = (offs.clone().min(), offs.max()) else {
            return 0..0;
        };
        // Checked in `Head::dynamic`: strtab + strsz fits, and every offset is below strsz.
        let end = hi.saturating_add(MAX_NAME as u64 + 1).min(self.strsz);
        self.strtab + lo..self.strtab + end
    }

    /// The names: `bytes` are the file's bytes over [`strings`](Self::strings).
    ///
    /// # Errors
    ///
    /// [`ElfError::Truncated`] if `bytes` are short; [`ElfError::Corrupt`] for a name with
    /// no NUL within [`MAX_NAME`] bytes or the string table.
    pub fn names(&self, bytes: &[u8]) -> Result<Needed, ElfError> {
        let span = self.strings();
        let bytes = slice(bytes, 0..span.end - span.start, "string table")?;
        let base = span.start.saturating_sub(self.strtab);
        let name = |off: u64| -> Result<Vec<u8>, ElfError> {
            // `off` is at least `base` (the span starts at the least offset).
            let rest = slice(bytes, off - base..bytes.len() as u64, "name")?;
            let len = rest
                .iter()
                .take(MAX_NAME + 1)
                .position(|&b| b == 0)
                .ok_or(ElfError::Corrupt("name without NUL"))?;
            Ok(rest[..len].to_vec())
        };
        let libraries = self
            .needed
            .iter()
            .map(|&o| name(o))
            .collect::<Result<_, _>>()?;
        let run_path = match self.path {
            Some(o) => name(o)?
                .split(|&b| b == b':')
                .filter(|d| !d.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
            None => Vec::new(),
        };
        Ok(Needed {
            libraries,
            run_path,
        })
    }
}

/// The libraries a whole ELF file needs: [`Head::parse`], [`Head::dynamic`] and
/// [`Dynamic::names`] over `file` (a static executable needs none).
///
/// # Errors
///
/// As those steps.
pub fn needed(file: &[u8]) -> Result<Needed, ElfError> {
    let head = Head::parse(file)?;
    let Some(range) = head.dynamic_range() else {
        return Ok(Needed::default());
    };
    let dynamic = head.dynamic(slice(
        file,
        range.start..range.end.min(file.len() as u64),
        "dynamic section",
    )?)?;
    let span = dynamic.strings();
    dynamic.names(slice(file, span, "string table")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The host's libc (x86-64 or AArch64 multiarch, or a plain /lib64).
    fn libc() -> Vec<u8> {
        for p in [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
            "/lib64/libc.so.6",
        ] {
            if let Ok(b) = std::fs::read(p) {
                return b;
            }
        }
        panic!("no libc.so.6 on this host");
    }

    #[test]
    fn real_objects_name_their_libraries() {
        let ls = needed(&host("/bin/ls")).unwrap();
        assert!(
            ls.libraries.iter().any(|l| l == b"libc.so.6"),
            "{:?}",
            ls.libraries
        );
        let libc = needed(&libc()).unwrap();
        // libc needs the dynamic loader only.
        assert_eq!(libc.libraries.len(), 1, "{:?}", libc.libraries);
        assert!(libc.libraries[0].starts_with(b"ld-linux"));
    }

    #[test]
    fn a_program_names_its_interpreter_a_library_none() {
        let file = host("/bin/ls");
        let head = Head::parse(&file[..HEAD_MAX as usize]).unwrap();
        let r = head.interp_range().unwrap();
        let path = head
            .interpreter(&file[r.start as usize..r.end as usize])
            .unwrap();
        assert!(path.starts_with(b"/lib"), "{}", path.escape_ascii());
        assert!(path.windows(8).any(|w| w == b"ld-linux"));
        // Cut before the NUL, or empty: errors, not panics.
        let short = &file[r.start as usize..r.end as usize - 1];
        assert!(head.interpreter(short).is_err());
        assert!(head.interpreter(&[]).is_err());
        let libc = libc();
        let head = Head::parse(&libc[..HEAD_MAX as usize]).unwrap();
        // glibc's libc.so.6 is runnable and names an interpreter; what matters is no panic
        // and a typed error when there is none.
        if head.interp_range().is_none() {
            assert_eq!(
                head.interpreter(b"/x\0"),
                Err(ElfError::Corrupt("no interpreter"))
            );
        }
    }

    #[test]
    fn the_steps_need_only_their_spans() {
        let file = host("/bin/ls");
        let head = Head::parse(&file[..HEAD_MAX as usize]).unwrap();
        let d = head.dynamic_range().unwrap();
        let dynamic = head
            .dynamic(&file[d.start as usize..d.end as usize])
            .unwrap();
        let s = dynamic.strings();
        assert!(s.end - s.start <= dynamic.strsz);
        let names = dynamic
            .names(&file[s.start as usize..s.end as usize])
            .unwrap();
        assert_eq!(names, needed(&file).unwrap());
        // One byte short of each span: truncated, not a panic.
        assert!(matches!(
            head.dynamic(&file[d.start as usize..d.end as usize - 1]),
            Err(ElfError::Truncated { .. })
        ));
        assert!(matches!(
            dynamic.names(&file[s.start as usize..s.end as usize - 1]),
            Err(ElfError::Truncated { .. }) | Err(ElfError::Corrupt(_))
        ));
    }

    #[test]
    fn truncated_and_garbage_objects_are_errors() {
        let file = libc();
        for len in [0, 3, 4, 20, 63, 64, 100, 64 + 56 * 2] {
            assert!(needed(&file[..len]).is_err(), "{len}");
        }
        assert_eq!(needed(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        // Not 64-bit.
        let mut f = file.clone();
        f[4] = 1;
        assert_eq!(needed(&f), Err(ElfError::Unsupported("not 64-bit")));
        // Program headers far away.
        let mut f = file.clone();
        f[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(needed(&f), Err(ElfError::Corrupt(_))));
        // Every byte of the first 8 KiB flipped in turn: an error or a list, never a panic.
        let mut f = file.clone();
        for i in 0..8192.min(f.len()) {
            f[i] ^= 0xff;
            let _ = needed(&f);
            f[i] ^= 0xff;
        }
    }

    #[test]
    fn the_caps_hold() {
        // A hand-built object: one PT_LOAD over the file, PT_DYNAMIC with 65 DT_NEEDED.
        let mut f = vec![0u8; 4096];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |t: u32, off: u64, len: u64| {
            let mut p = [0u8; 56];
            p[..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&off.to_le_bytes());
            p[32..40].copy_from_slice(&len.to_le_bytes());
            p
        };
        f[64..120].copy_from_slice(&ph(PT_LOAD, 0, 4096));
        f[120..176].copy_from_slice(&ph(PT_DYNAMIC, 1024, 70 * 16));
        let mut at = 1024;
        let mut put = |tag: u64, val: u64| {
            f[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&val.to_le_bytes());
            at += 16;
        };
        put(DT_STRTAB, 3000);
        put(DT_STRSZ, 1000);
        for _ in 0..65 {
            put(DT_NEEDED, 1);
        }
        assert_eq!(
            needed(&f),
            Err(ElfError::Corrupt("too many needed libraries"))
        );
        // 64 are read; a name with no NUL in 256 bytes is refused.
        f[1024 + 2 * 16 + 64 * 16..1024 + 2 * 16 + 64 * 16 + 8].fill(0);
        f[3000..4000].fill(b'a');
        assert_eq!(needed(&f), Err(ElfError::Corrupt("name without NUL")));
        f[3001 + 10] = 0;
        let n = needed(&f).unwrap();
        assert_eq!(n.libraries.len(), 64);
        assert_eq!(n.libraries[0], b"aaaaaaaaaa");
    }
}
