//! `vmtool`: what busybox cannot do (precisely) in the test VM.
//!
//! - `vmtool read [--bs BYTES] FILE...` reads every file to the end with `BYTES`-sized reads
//!   (default 1 MiB) and prints one line `bytes=N ns=T` with the total byte count and the wall
//!   time in nanoseconds (busybox `time` only has 10 ms resolution). On the first read error it
//!   prints `error: FILE: MESSAGE errno=N name=ENAME` and exits with status 1, so a guest
//!   script can check for a particular errno (`ENOBUFS` for a refused blob).
//! - `vmtool mount FSTYPE SOURCE TARGET [OPTIONS]` calls mount(2) read-only with exactly these
//!   arguments. busybox `mount` puts every regular-file source on a loop device, so it cannot
//!   make a *file-backed* EROFS mount; this can. Errors print as for `read`.
//! - `vmtool walk [--bs BYTES] DIR` walks the tree under `DIR` (readdir and lstat of every
//!   entry, directories in name order, symlinks not followed) and reads every regular file to
//!   the end, timed as one: `files=N bytes=B ns=T utime_us=U stime_us=S big_ns=B
//!   small_open_ns=O small_read_ns=R small_max_ns=M meta_ns=D` (the CPU time of the walker
//!   itself, so a script can tell the reader's own work from its waits; then where the time
//!   went: opening and reading files of 1 MiB or more, opening files under 1 MiB, reading
//!   them, the slowest of them, and readdir plus lstat). Errors print as for `read`.
//! - `vmtool http-get SOCKET PATH` sends `GET PATH` over the unix socket `SOCKET` (HTTP/1.0)
//!   and prints the response body; exits 1 unless the status is 200 (a daemon's API socket,
//!   e.g. nydusd's metrics, with no curl in the guest).
//! - `vmtool pages FILE...` shows how the page cache holds the files' cached pages (root: it
//!   reads `/proc/self/pagemap` and `/proc/kpageflags`): `pages=N cached=C runs=R
//!   large=L`, where `cached` pages are those `mincore` finds resident (only those are touched,
//!   through a read-only mapping, so no read is started), `runs` the stretches of them that are
//!   physically contiguous (consecutive file pages at consecutive page frames: what a bio
//!   merges into one vector, so `cached / runs` is the mean vector of a file-backed EROFS
//!   request) and `large` the pages in large folios (compound head or tail).
//! - `vmtool sample EVERY_MS FOR_MS` prints, every `EVERY_MS` for `FOR_MS`, what the guest is
//!   doing: `t=EPOCH_MS cpu=USER,SYS,IDLE,IOWAIT` (jiffies since boot, all CPUs), `vda=R,W,
//!   INFLIGHT,TICKS` (completed reads and writes of the disk, requests in flight, ms busy) and
//!   each task but itself that is running or in uninterruptible sleep, `COMM/TID:S:WCHAN`
//!   (`/proc/TID/wchan`: the kernel function it sleeps in). A diagnostic of where a step's
//!   time goes (the container start's `CONTAINER_START_SAMPLE=1`).
//! - `vmtool scrub KEEP_MB` writes every free page of the guest's memory but `KEEP_MB` (one
//!   anonymous mapping of `MemFree - KEEP_MB`, populated, so the kernel zeroes each page, then
//!   unmapped) and prints `scrubbed_mb=N`. Under qemu TCG, a freed page that held code keeps
//!   its translations until the next write to it invalidates them, which costs that writer
//!   (see the container start bench's module doc).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

fn errno_name(code: i32) -> &'static str {
    match code {
        1 => "EPERM",
        2 => "ENOENT",
        5 => "EIO",
        6 => "ENXIO",
        9 => "EBADF",
        12 => "ENOMEM",
        13 => "EACCES",
        16 => "EBUSY",
        19 => "ENODEV",
        22 => "EINVAL",
        28 => "ENOSPC",
        61 => "ENODATA",
        74 => "EBADMSG",
        95 => "EOPNOTSUPP",
        15 => "ENOTBLK",
        105 => "ENOBUFS",
        117 => "EUCLEAN",
        _ => "E?",
    }
}

fn read_all(files: &[String], bs: usize) -> ExitCode {
    let mut buf = vec![0u8; bs];
    let mut total: u64 = 0;
    let start = Instant::now();
    for path in files {
        if let Err(e) = read_file(Path::new(path), &mut buf, &mut total) {
            return report(path, &e);
        }
    }
    let ns = start.elapsed().as_nanos();
    println!("bytes={total} ns={ns}");
    ExitCode::SUCCESS
}

/// One file read to the end; adds its length to `total`.
fn read_file(path: &Path, buf: &mut [u8], total: &mut u64) -> std::io::Result<()> {
    read_to_end(&mut std::fs::File::open(path)?, buf, total)
}

fn read_to_end(file: &mut std::fs::File, buf: &mut [u8], total: &mut u64) -> std::io::Result<()> {
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => *total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Where a walk's time went, in nanoseconds: opening and reading files under 1 MiB, and
/// files of 1 MiB or more (the rest is readdir and lstat).
#[derive(Default)]
struct Phases {
    small_open: u128,
    small_read: u128,
    small_max: u128,
    big: u128,
}

/// Depth first, entries in name order; returns the path that failed with the error.
fn walk_dir(
    dir: &Path,
    buf: &mut [u8],
    files: &mut u64,
    total: &mut u64,
    phases: &mut Phases,
) -> Result<(), (String, std::io::Error)> {
    let fail = |p: &Path| {
        let p = p.display().to_string();
        move |e| (p, e)
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
        .map_err(fail(dir))?;
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(fail(&path))?;
        if meta.is_dir() {
            walk_dir(&path, buf, files, total, phases)?;
        } else if meta.is_file() {
            let t0 = Instant::now();
            let mut file = std::fs::File::open(&path).map_err(fail(&path))?;
            let opened = t0.elapsed().as_nanos();
            read_to_end(&mut file, buf, total).map_err(fail(&path))?;
            let all = t0.elapsed().as_nanos();
            if meta.len() >= 1 << 20 {
                phases.big += all;
            } else {
                phases.small_open += opened;
                phases.small_read += all - opened;
                phases.small_max = phases.small_max.max(all);
            }
            *files += 1;
        }
    }
    Ok(())
}

fn cpu_us() -> (i64, i64) {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to an `rusage`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    (us(ru.ru_utime), us(ru.ru_stime))
}

fn walk(dir: &str, bs: usize) -> ExitCode {
    let mut buf = vec![0u8; bs];
    let (mut files, mut total) = (0u64, 0u64);
    let (u0, s0) = cpu_us();
    let start = Instant::now();
    let mut p = Phases::default();
    if let Err((path, e)) = walk_dir(Path::new(dir), &mut buf, &mut files, &mut total, &mut p) {
        return report(&path, &e);
    }
    let ns = start.elapsed().as_nanos();
    let (u1, s1) = cpu_us();
    println!(
        "files={files} bytes={total} ns={ns} utime_us={} stime_us={} big_ns={} small_open_ns={} small_read_ns={} small_max_ns={} meta_ns={}",
        u1 - u0,
        s1 - s0,
        p.big,
        p.small_open,
        p.small_read,
        p.small_max,
        ns.saturating_sub(p.big + p.small_open + p.small_read)
    );
    ExitCode::SUCCESS
}

fn http_get(socket: &str, path: &str) -> ExitCode {
    let mut response = Vec::new();
    let result = std::os::unix::net::UnixStream::connect(socket).and_then(|mut s| {
        // Some servers keep the connection open after the response, HTTP/1.0 or not: read
        // until the body has its Content-Length (or EOF), and give up after 10 s of silence.
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            response.extend_from_slice(&buf[..n]);
            if let Some((head, body)) = split_response(&response)
                && content_length(head).is_some_and(|len| body.len() >= len)
            {
                return Ok(());
            }
        }
    });
    if let Err(e) = result {
        return report(socket, &e);
    }
    let (head, body) = split_response(&response).unwrap_or((&response, &[]));
    let head = String::from_utf8_lossy(head);
    println!("{}", String::from_utf8_lossy(body));
    if head.split_whitespace().nth(1) == Some("200") {
        ExitCode::SUCCESS
    } else {
        eprintln!("{head}");
        ExitCode::from(1)
    }
}

/// Headers and body of an HTTP response, split at the first empty line.
fn split_response(r: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = r.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&r[..at], &r[at + 4..]))
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// `vmtool pages FILE...`: see the module doc.
fn pages(files: &[String]) -> ExitCode {
    let (mut total, mut cached, mut runs, mut large) = (0u64, 0u64, 0u64, 0u64);
    let pagemap = match std::fs::File::open("/proc/self/pagemap") {
        Ok(f) => f,
        Err(e) => return report("/proc/self/pagemap", &e),
    };
    let kpageflags = match std::fs::File::open("/proc/kpageflags") {
        Ok(f) => f,
        Err(e) => return report("/proc/kpageflags", &e),
    };
    let word = |f: &std::fs::File, index: u64| -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, index * 8)?;
        Ok(u64::from_le_bytes(b))
    };
    // SAFETY: sysconf has no memory arguments.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    for path in files {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return report(path, &e),
        };
        let len = match file.metadata() {
            Ok(m) => m.len() as usize,
            Err(e) => return report(path, &e),
        };
        if len == 0 {
            continue;
        }
        let n = len.div_ceil(page);
        total += n as u64;
        // A shared read-only mapping of the open file, only read through `base` within it.
        let map = match Mapping::new(
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
        ) {
            Ok(m) => m,
            Err(e) => return report(path, &e),
        };
        let base = map.base;
        let mut resident = vec![0u8; n];
        // SAFETY: `base` maps `len` bytes; `resident` holds one byte per page of it.
        let rc = unsafe { libc::mincore(base, len, resident.as_mut_ptr()) };
        let mut result = if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        let mut last_pfn: Option<u64> = None;
        for (i, r) in resident.iter().enumerate() {
            if result.is_err() {
                break;
            }
            if r & 1 == 0 {
                last_pfn = None;
                continue;
            }
            // SAFETY: page `i` lies inside the mapping; the volatile read maps it (a cached
            // page: no read is started) so that pagemap reports its frame.
            unsafe { std::ptr::read_volatile(base.cast::<u8>().add(i * page)) };
            let vaddr = base as u64 + (i * page) as u64;
            let entry = match word(&pagemap, vaddr / page as u64) {
                Ok(e) => e,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            // Bit 63: present; bits 0-54: the page frame number.
            if entry >> 63 == 0 {
                last_pfn = None;
                continue;
            }
            let pfn = entry & ((1 << 55) - 1);
            cached += 1;
            if last_pfn != Some(pfn.wrapping_sub(1)) {
                runs += 1;
            }
            last_pfn = Some(pfn);
            match word(&kpageflags, pfn) {
                // KPF_COMPOUND_HEAD (15), KPF_COMPOUND_TAIL (16).
                Ok(flags) if flags & (3 << 15) != 0 => large += 1,
                Ok(_) => {}
                Err(e) => result = Err(e),
            }
        }
        drop(map);
        if let Err(e) = result {
            return report(path, &e);
        }
    }
    println!("pages={total} cached={cached} runs={runs} large={large}");
    ExitCode::SUCCESS
}

fn report(path: &str, e: &std::io::Error) -> ExitCode {
    let code = e.raw_os_error().unwrap_or(0);
    println!("error: {path}: {e} errno={code} name={}", errno_name(code));
    ExitCode::from(1)
}

fn mount(fstype: &str, source: &str, target: &str, options: &str) -> ExitCode {
    let cstr = |s: &str| std::ffi::CString::new(s).ok();
    let (Some(fstype_c), Some(source_c), Some(target_c), Some(options_c)) =
        (cstr(fstype), cstr(source), cstr(target), cstr(options))
    else {
        return usage();
    };
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; the data
    // argument is a string as erofs and ext4 expect.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            libc::MS_RDONLY,
            options_c.as_ptr().cast(),
        )
    };
    if rc == 0 {
        ExitCode::SUCCESS
    } else {
        report(source, &std::io::Error::last_os_error())
    }
}

/// `vmtool sample EVERY_MS FOR_MS`: see the module doc.
fn sample(every_ms: u64, for_ms: u64) -> ExitCode {
    let me = std::process::id().to_string();
    let start = Instant::now();
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    while start.elapsed().as_millis() < u128::from(for_ms) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let stat = read("/proc/stat");
        let cpu: Vec<&str> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .collect();
        let f = |i: usize| cpu.get(i).copied().unwrap_or("-");
        let disks = read("/proc/diskstats");
        let vda: Vec<&str> = disks
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.get(2) == Some(&"vda"))
            .unwrap_or_default();
        let d = |i: usize| vda.get(i).copied().unwrap_or("-");
        let mut line = format!(
            "t={t} cpu={},{},{},{} vda={},{},{},{}",
            f(0),
            f(2),
            f(3),
            f(4),
            d(3),
            d(7),
            d(11),
            d(12)
        );
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let pid = p.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                    continue;
                }
                let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                    continue;
                };
                for task in tasks.flatten() {
                    let tid = task.file_name().to_string_lossy().into_owned();
                    let st = read(&format!("/proc/{pid}/task/{tid}/stat"));
                    // `PID (COMM) S ...`: COMM may hold spaces and parentheses.
                    let (Some(open), Some(close)) = (st.find('('), st.rfind(')')) else {
                        continue;
                    };
                    let comm = &st[open + 1..close];
                    let state = st[close + 1..].split_whitespace().next().unwrap_or("?");
                    if state == "R" || state == "D" {
                        let wchan = read(&format!("/proc/{pid}/task/{tid}/wchan"));
                        line.push_str(&format!(" {comm}/{tid}:{state}:{wchan}"));
                    }
                }
            }
        }
        line.push('\n');
        if out.write_all(line.as_bytes()).is_err() {
            return ExitCode::FAILURE;
        }
        std::thread::sleep(std::time::Duration::from_millis(every_ms));
    }
    ExitCode::SUCCESS
}

/// `vmtool scrub KEEP_MB`: see the module doc.
fn scrub(keep_mb: u64) -> ExitCode {
    let mb = (mem_free_kb().unwrap_or(0) / 1024).saturating_sub(keep_mb);
    if mb == 0 {
        println!("scrubbed_mb=0");
        return ExitCode::SUCCESS;
    }
    // MAP_POPULATE makes the kernel fault in (and zero) every page; dropped at once.
    match Mapping::new(
        (mb as usize) << 20,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
        -1,
    ) {
        Ok(map) => {
            drop(map);
            println!("scrubbed_mb={mb}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: mmap {mb} MiB: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `MemFree` of `/proc/meminfo`, in kB.
fn mem_free_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemFree:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A memory mapping (`pages`' view of a file, `scrub`'s anonymous memory), unmapped on drop.
struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// `mmap(NULL, len, prot, flags, fd, 0)`.
    fn new(len: usize, prot: i32, flags: i32, fd: i32) -> std::io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address the kernel picks (no existing memory is
        // touched); `Mapping` owns it and unmaps it once, on drop.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { base, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, of `len` bytes; nothing uses it after the drop.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmtool read [--bs BYTES] FILE... | vmtool walk [--bs BYTES] DIR | \
         vmtool mount FSTYPE SOURCE TARGET [OPTIONS] | vmtool http-get SOCKET PATH | \
         vmtool pages FILE... | vmtool sample EVERY_MS FOR_MS | \
         vmtool scrub KEEP_MB"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(cmd @ ("read" | "walk")) => {
            let mut bs = 1 << 20;
            let mut rest = &args[1..];
            if rest.first().map(String::as_str) == Some("--bs") {
                match rest.get(1).and_then(|s| s.parse::<usize>().ok()) {
                    Some(n) if n > 0 && n <= 64 << 20 => bs = n,
                    _ => return usage(),
                }
                rest = &rest[2..];
            }
            match (cmd, rest) {
                ("read", [_, ..]) => read_all(rest, bs),
                ("walk", [dir]) => walk(dir, bs),
                _ => usage(),
            }
        }
        Some("pages") if args.len() > 1 => pages(&args[1..]),
        Some("scrub") if args.len() == 2 => match args[1].parse::<u64>() {
            Ok(keep) => scrub(keep),
            Err(_) => usage(),
        },
        Some("sample") if args.len() == 3 => {
            match (args[1].parse::<u64>(), args[2].parse::<u64>()) {
                (Ok(every), Ok(total)) if every > 0 => sample(every, total),
                _ => usage(),
            }
        }
        Some("http-get") if args.len() == 3 => http_get(&args[1], &args[2]),
        Some("mount") if (4..=5).contains(&args.len()) => mount(
            &args[1],
            &args[2],
            &args[3],
            args.get(4).map_or("", String::as_str),
        ),
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_keeps_what_it_is_told_to() {
        // More to keep than there is: nothing mapped, success.
        assert_eq!(scrub(u64::MAX), ExitCode::SUCCESS);
        // A real scrub of what is free beyond all but 16 MiB would take the test machine's
        // memory: a small one instead, through the same path.
        let free_mb = mem_free_kb().unwrap() / 1024;
        assert_eq!(scrub(free_mb.saturating_sub(16)), ExitCode::SUCCESS);
    }

    #[test]
    fn sample_runs_once_and_stops() {
        let t = Instant::now();
        assert_eq!(sample(10, 30), ExitCode::SUCCESS);
        assert!(t.elapsed().as_millis() >= 30);
    }
}
