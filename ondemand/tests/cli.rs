//! The `erofs-ondemand` binary: arguments, the command sequence it writes to the device, and a
//! clean exit with a summary line on SIGTERM and SIGINT. A regular file stands in for
//! `/dev/cachefiles` (through the hidden `--device` option): it records the commands and never
//! yields a message.
#![cfg(feature = "cli")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn serve_then_signal(signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("device");
    std::fs::write(&device, b"").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args(["serve", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .args(["--blob-dir"])
        .arg(dir.path())
        .args([
            "--tag",
            "t1",
            "--threads",
            "2",
            "--readahead",
            "0",
            "--device",
        ])
        .arg(&device)
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
}

#[test]
fn sigterm_stops_cleanly_with_a_summary() {
    serve_then_signal(Signal::SIGTERM);
}

#[test]
fn sigint_stops_cleanly_with_a_summary() {
    serve_then_signal(Signal::SIGINT);
}

#[test]
fn refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args([
            "serve",
            "--cache-dir",
            "/c",
            "--blob-dir",
            "/b",
            "--threads",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_erofs-ondemand"))
        .args([
            "serve",
            "--cache-dir",
            "/c",
            "--blob-dir",
            "/b",
            "--device",
            "/nonexistent/dev",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/dev"));
}
