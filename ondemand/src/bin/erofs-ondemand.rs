//! `erofs-ondemand`: serve EROFS-over-fscache mounts from blobs in a local directory.
//!
//! ```text
//! erofs-ondemand serve --cache-dir DIR --blob-dir DIR [--tag TAG] [--threads N] [--readahead BYTES]
//! ```
//!
//! Binds the cache in `DIR` (on ext4/xfs/btrfs, not tmpfs) in on-demand mode, then answers the
//! kernel until SIGINT or SIGTERM: each OPEN's cookie key (the `fsid`, or the device tag /
//! `device=` name) names a file in the blob directory. Logs one line per OPEN and CLOSE and
//! every error (`RUST_LOG` overrides the `info` default) and prints a summary line at exit:
//! `erofs-ondemand: opens=N reads=N closes=N bytes_written=N ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ondemand::{CachefilesDevice, Daemon, LocalDirServer, Session, Shutdown, shutdown_on_signals};

#[derive(Parser)]
#[command(
    name = "erofs-ondemand",
    version,
    about = "EROFS over fscache: a cachefiles on-demand daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bind the cache and serve blobs from a directory until SIGINT/SIGTERM.
    Serve {
        /// The cache directory (`dir` command; must be on ext4, xfs or btrfs).
        #[arg(long, value_name = "DIR")]
        cache_dir: PathBuf,
        /// Directory holding the blobs, each named by its cookie key (fsid, tag or device= name).
        #[arg(long, value_name = "DIR")]
        blob_dir: PathBuf,
        /// The cache's tag (`tag` command).
        #[arg(long)]
        tag: Option<String>,
        /// Worker threads.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
        /// Readahead window per READ, in bytes (suffixes K, M, G; 0 turns it off).
        #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_bytes)]
        readahead: u64,
        /// The cachefiles device.
        #[arg(long, value_name = "PATH", default_value = ondemand::DEFAULT_DEVICE_PATH, hide = true)]
        device: PathBuf,
    },
}

/// `4096`, `64K`, `1M`, `1MiB`, `2G`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    let num: u64 = num.parse().map_err(|e| format!("`{s}`: {e}"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("`{s}`: unknown suffix `{other}`")),
    };
    num.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve {
            cache_dir,
            blob_dir,
            tag,
            threads,
            readahead,
            device,
        } => {
            // First, before any thread starts: SIGINT/SIGTERM go to a signalfd.
            let shutdown = Shutdown::new();
            if let Err(e) = shutdown_on_signals(shutdown.clone()) {
                eprintln!("erofs-ondemand: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
            if let Err(e) = std::fs::create_dir_all(&cache_dir) {
                eprintln!("erofs-ondemand: cannot create {}: {e}", cache_dir.display());
                return ExitCode::FAILURE;
            }
            let dev = match CachefilesDevice::open_path(&device) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("erofs-ondemand: cannot open {}: {e}", device.display());
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = dev.bind_ondemand(&cache_dir, tag.as_deref()) {
                eprintln!(
                    "erofs-ondemand: cannot bind cache {}: {e}",
                    cache_dir.display()
                );
                return ExitCode::FAILURE;
            }
            log::info!(
                "serving blobs from {} (cache {}, {threads} threads, readahead {readahead} bytes)",
                blob_dir.display(),
                cache_dir.display()
            );
            let session = Session::new(LocalDirServer::new(blob_dir)).with_readahead(readahead);
            let daemon = Daemon::new(dev, session)
                .with_threads(usize::from(threads))
                .with_shutdown(shutdown);
            let result = daemon.run();
            println!("erofs-ondemand: {}", daemon.session().stats());
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("0"), Ok(0));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert!(parse_bytes("1T").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "erofs-ondemand",
            "serve",
            "--cache-dir",
            "/c",
            "--blob-dir",
            "/b",
            "--readahead",
            "0",
        ])
        .unwrap();
        let Cmd::Serve {
            readahead,
            threads,
            tag,
            ..
        } = cli.command;
        assert_eq!((readahead, threads, tag), (0, 4, None));
    }
}
