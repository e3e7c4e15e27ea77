//! The `erofs-ondemand` binary: arguments, the command sequence it writes to the device, and a
//! clean exit with a summary line on SIGTERM and SIGINT. A regular file stands in for
//! `/dev/cachefiles` (through the hidden `--device` option): it records the commands and never
//! yields a message.
#![cfg(feature = "cli")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `serve` on a regular file standing in for `/dev/cachefiles` (created empty in `dir`, at
/// the returned path): the arguments `serve --cache-dir DIR/cache --blob-dir DIR --device
/// FILE`, for the caller to add to.
fn fake_serve(dir: &std::path::Path) -> (std::path::PathBuf, Vec<std::ffi::OsString>) {
    let device = dir.join("device");
    std::fs::write(&device, b"").unwrap();
    let args = vec![
        "serve".into(),
        "--cache-dir".into(),
        dir.join("cache").into(),
        "--blob-dir".into(),
        dir.into(),
        "--device".into(),
        device.clone().into(),
    ];
    (device, args)
}

fn serve_then_signal(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let (device, serve) = fake_serve(dir.path());
    let child = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args(&serve)
        .args([
            "--tag",
            "t1",
            "--threads",
            "2",
            "--readahead",
            "0",
            "--record",
        ])
        .arg(dir.path().join("trace"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the bind sequence is written, then signal.
    let cache = dir.path().join("cache");
    let expected = format!("dir {}tag t1bind ondemand", cache.display());
    let start = Instant::now();
    while std::fs::read(&device).unwrap().len() < expected.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no bind sequence written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    // One write() per command, no separators.
    assert_eq!(
        String::from_utf8(std::fs::read(&device).unwrap()).unwrap(),
        expected
    );
    assert!(cache.is_dir(), "the cache directory is created");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("erofs-ondemand: opens=0 reads=0 closes=0 bytes_written=0")),
        "{stdout}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
    // --record left a trace (no READ came: only the header).
    assert_eq!(
        std::fs::read_to_string(dir.path().join("trace")).unwrap(),
        format!("{}\n", ondemand::TRACE_HEADER)
    );
}

#[test]
fn sigterm_stops_cleanly_with_a_summary() {
    serve_then_signal(Signal::SIGTERM);
}

#[test]
fn sigint_stops_cleanly_with_a_summary() {
    serve_then_signal(Signal::SIGINT);
}

/// `serve --cache-dir /c --blob-dir /b MORE`, which must fail: its standard error.
fn refused(more: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args(["serve", "--cache-dir", "/c", "--blob-dir", "/b"])
        .args(more)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{more:?} succeeded: {stderr}");
    stderr
}

#[test]
fn refuses_bad_arguments() {
    refused(&["--threads", "0"]);
    assert!(refused(&["--device", "/nonexistent/dev"]).contains("cannot open /nonexistent/dev"));
}

#[test]
fn refuses_unreadable_prefetch_lists() {
    let dir = tempfile::tempdir().unwrap();
    let run = |list: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
            .args(["serve", "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg("--blob-dir")
            .arg(dir.path())
            .arg("--prefetch-list")
            .arg(list)
            .args(["--device", "/nonexistent/dev"])
            .output()
            .unwrap()
    };
    let missing = run(&dir.path().join("missing"));
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--prefetch-list"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"\x00\xff not a trace\n1 2 3\n").unwrap();
    let out = run(&garbage);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an access trace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A trace with bad lines is read (they are skipped): the failure is the device's.
    let bad_lines = dir.path().join("bad-lines");
    std::fs::write(
        &bad_lines,
        format!("{}\nblob 0 4096\nblob zero 1\n", ondemand::TRACE_HEADER),
    )
    .unwrap();
    let out = run(&bad_lines);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open /nonexistent/dev"), "{stderr}");
    assert!(stderr.contains("1 bad lines skipped"), "{stderr}");
}

/// Wait until `path`'s contents satisfy `ok`, or panic after 10 s.
fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn supervised_daemons_take_over_the_held_device() {
    let dir = tempfile::tempdir().unwrap();
    let (device, serve_args) = fake_serve(dir.path());
    let socket = dir.path().join("holder.sock");
    let bin = env!("CARGO_BIN_EXE_erofs-ondemand");
    let mut holder = Command::new(bin)
        .args(["hold", "--socket"])
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("holder socket", || socket.exists());
    let serve = || {
        Command::new(bin)
            .args(&serve_args)
            .args(["--tag", "t1", "--supervisor"])
            .arg(&socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let bind = format!(
        "dir {}tag t1bind ondemand",
        dir.path().join("cache").display()
    );
    let written = || String::from_utf8(std::fs::read(&device).unwrap()).unwrap();
    // The first daemon binds and hands the fd over; killed with SIGKILL, it cannot clean up.
    let mut first = serve();
    wait_until("first bind", || written() == bind);
    std::thread::sleep(Duration::from_millis(300));
    // While it lives, a second daemon is refused: two daemons on one cache break each other.
    let out = serve().wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains(&format!("pid {} still serves the held cache", first.id())),
        "{log}"
    );
    assert_eq!(written(), bind, "the refused daemon wrote nothing");
    first.kill().unwrap();
    let out = first.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("handed the device fd to the holder"), "{log}");
    // Each successor adopts the held fd and writes only `restore` (no second bind).
    for round in 1..=2 {
        let next = serve();
        let expected = format!("{bind}{}", "restore".repeat(round));
        wait_until("restore", || written() == expected);
        std::thread::sleep(Duration::from_millis(200));
        kill(Pid::from_raw(next.id() as i32), Signal::SIGTERM).unwrap();
        let out = next.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("took over the cache held by"), "{log}");
    }
    kill(Pid::from_raw(holder.id() as i32), Signal::SIGTERM).unwrap();
    assert!(holder.wait().unwrap().success());
    let mut log = String::new();
    use std::io::Read;
    holder
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("stored a cachefiles fd"), "{log}");
    assert_eq!(log.matches("handed the cachefiles fd").count(), 2, "{log}");
    assert!(!socket.exists(), "the holder removes its socket");
}

#[test]
fn supervisor_without_a_holder_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args([
            "serve",
            "--cache-dir",
            "/c",
            "--blob-dir",
            "/b",
            "--supervisor",
        ])
        .arg(dir.path().join("nobody.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the fd holder"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_file_is_written_while_serving_and_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (_device, serve) = fake_serve(dir.path());
    let metrics = dir.path().join("metrics.prom");
    let child = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args(&serve)
        .args(["--prefetch", "--metrics"])
        .arg(&metrics)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("metrics file", || metrics.exists());
    let text = std::fs::read_to_string(&metrics).unwrap();
    for name in [
        "erofs_ondemand_open_requests_total 0",
        "erofs_ondemand_read_requests_total 0",
        "erofs_ondemand_close_requests_total 0",
        "erofs_ondemand_fetched_bytes_total 0",
        "erofs_ondemand_prefetched_bytes_total 0",
        "erofs_ondemand_errors_total 0",
        "erofs_ondemand_objects 0",
    ] {
        assert!(text.lines().any(|l| l == name), "{name} missing:\n{text}");
    }
    // Rewritten (a new inode each time: renamed over) at least once a second.
    use std::os::unix::fs::MetadataExt;
    let first = std::fs::metadata(&metrics).unwrap().ino();
    wait_until("a rewrite", || {
        std::fs::metadata(&metrics).is_ok_and(|m| m.ino() != first)
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prefetch on: whole objects"), "{stderr}");
    assert!(!dir.path().join("metrics.prom.tmp").exists());
}

#[test]
fn mount_refuses_what_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("not-an-image");
    std::fs::write(&image, vec![0u8; 8192]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .arg("mount")
        .arg(&image)
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-an-image"), "{stderr}");
}

/// `--ready-fd N`: the parent's fd N (here a FIFO a shell opens as fd 3 before it execs the
/// daemon) gets `READY=1` once the daemon serves (the bind sequence written first) and is
/// closed then; a daemon that fails before closes it without the line; an fd that is not
/// open, or a standard stream, is refused before anything starts.
#[test]
fn ready_fd_says_ready_once_serving() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device");
    std::fs::write(&device, b"").unwrap();
    let fifo = dir.path().join("ready");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cache = dir.path().join("cache");
    let spawn = |device: &std::path::Path| {
        Command::new("sh")
            .args(["-c", r#"exec "$@" 3>"$READY""#, "sh"])
            .arg(env!("CARGO_BIN_EXE_erofs-ondemand"))
            .args(["serve", "--cache-dir"])
            .arg(&cache)
            .arg("--blob-dir")
            .arg(dir.path())
            .args(["--tag", "t1", "--ready-fd", "3", "--device"])
            .arg(device)
            .env("READY", &fifo)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // What the FIFO gets until its writer closes it (the open blocks until the shell opens
    // it for writing); the daemon is killed if that takes over 10 s.
    let said = |child: &std::process::Child| {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let r = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut s));
            let _ = tx.send(r.map(|_| s));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => r.unwrap(),
            Err(_) => {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                panic!("the readiness fd was not closed within 10 s");
            }
        }
    };
    let child = spawn(&device);
    assert_eq!(said(&child), ondemand::ready::READY_LINE);
    // Said once bound: the bind sequence is on the device already.
    let expected = format!("dir {}tag t1bind ondemand", cache.display());
    assert_eq!(std::fs::read(&device).unwrap(), expected.as_bytes());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A device that cannot be opened: the fd ends without the line.
    let failing = spawn(&dir.path().join("missing").join("device"));
    assert_eq!(said(&failing), "");
    let out = failing.wait_with_output().unwrap();
    assert!(!out.status.success());

    // Refused: fd 1 (clap's range), and an fd that is not open.
    for (fd, says) in [("1", "--ready-fd"), ("9", "--ready-fd 9")] {
        let stderr = refused(&["--ready-fd", fd, "--device", "/nonexistent/dev"]);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("cannot open /nonexistent/dev"), "{stderr}");
    }
}
