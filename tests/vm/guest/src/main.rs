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

use std::io::Read;
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
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return report(path, &e),
        };
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return report(path, &e),
            }
        }
    }
    let ns = start.elapsed().as_nanos();
    println!("bytes={total} ns={ns}");
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

fn usage() -> ExitCode {
    eprintln!(
        "usage: vmtool read [--bs BYTES] FILE... | vmtool mount FSTYPE SOURCE TARGET [OPTIONS]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("read") => {
            let mut bs = 1 << 20;
            let mut rest = &args[1..];
            if rest.first().map(String::as_str) == Some("--bs") {
                match rest.get(1).and_then(|s| s.parse::<usize>().ok()) {
                    Some(n) if n > 0 && n <= 64 << 20 => bs = n,
                    _ => return usage(),
                }
                rest = &rest[2..];
            }
            if rest.is_empty() {
                return usage();
            }
            read_all(rest, bs)
        }
        Some("mount") if (4..=5).contains(&args.len()) => mount(
            &args[1],
            &args[2],
            &args[3],
            args.get(4).map_or("", String::as_str),
        ),
        _ => usage(),
    }
}
