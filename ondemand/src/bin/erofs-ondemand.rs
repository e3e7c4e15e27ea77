//! `erofs-ondemand`: serve EROFS-over-fscache mounts from blobs in a local directory.
//!
//! ```text
//! erofs-ondemand serve --cache-dir DIR --blob-dir DIR [--tag TAG] [--threads N] [--readahead BYTES]
//!                      [--sequential-ahead BYTES] [--fill-threads N] [--write-behind on|off]
//!                      [--split-decode on|off]
//! ```
//!
//! Binds the cache in `DIR` (on ext4/xfs/btrfs, not tmpfs) in on-demand mode, then answers the
//! kernel until SIGINT or SIGTERM: each OPEN's cookie key (the `fsid`, or the device tag /
//! `device=` name) names a file in the blob directory. Logs one line per OPEN and CLOSE and
//! every error (`RUST_LOG` overrides the `info` default; each line stamped with the UTC time
//! to the millisecond, so a log times the phases of a start) and prints a summary line at exit:
//! `erofs-ondemand: opens=N reads=N closes=N bytes_written=N ...`.
//!
//! ```text
//! erofs-ondemand serve ... [--metrics PATH] [--prefetch] [--prefetch-path FSID:PATH]...
//!                          [--prefetch-threads N] [--prefetch-bandwidth BYTES] [--supervisor SOCKET]
//!                          [--record PATH] [--prefetch-list PATH] [--prefetch-nice N]
//!                          [--prefetch-at-open] [--predict-file BYTES] [--predict-dir BYTES]
//!                          [--predict-needed off|demanded|all] [--predict-entrypoint on|off]
//! erofs-ondemand hold --socket SOCKET
//! erofs-ondemand mount [--blob-dir DIR] IMAGE MOUNTPOINT
//! ```
//!
//! ```text
//! erofs-ondemand fanotify --cache-dir DIR --blob-dir DIR --image KEY [--device KEY]...
//!                         [--mountpoint MNT] [--mount-readahead BYTES] [--on-open nothing|window|whole]
//!                         [--supervisor SOCKET] [--buffered-io] [--early-answer]
//!                         [the tuning flags of serve: --threads, --readahead, --sequential-ahead,
//!                          --fill-threads, --write-behind, --split-decode, --fill-buffer, --metrics, --prefetch, --prefetch-path, --record,
//!                          --prefetch-list, ...]
//! ```
//!
//! `fanotify` is the Linux 7.2+ path (no fscache): sparse backing files for the image and its
//! blobs in the cache dir, marked for fanotify pre-content events and filled on demand
//! (`ondemand::fanotify`, the same engine as `serve`), the image mounted file-backed on MNT;
//! at SIGINT/SIGTERM it unmounts and prints `erofs-ondemand: opens=N reads=N ...` (each
//! pre-content event is a READ). Started again on the same cache dir it keeps the files and
//! fetches nothing they hold. The backing files are written with `O_DIRECT` and mounted with
//! `directio` (the default; `--buffered-io` writes and reads them through the page cache);
//! `--early-answer` allows an event once its own range is written while the rest of its
//! window still streams in.
//!
//! With `--image REF` (`serve` or `fanotify`: the image served from its registry) every Nydus
//! chunk is checked against the bootstrap's digest before the kernel gets any of its bytes, a
//! mismatch failing the read with EIO (`--verify-digests off` skips it; with `--blob-dir` the
//! check is off unless `--verify-digests` is given).
//!
//! `--metrics` rewrites a Prometheus text file atomically every 500 ms; `--prefetch` fills
//! objects in the background, starting with the ranges named by the prefetch table of every
//! Nydus RAFS v6 bootstrap in the blob dir (`--prefetch-path` first fills the blob ranges of
//! the named files); `--record PATH` writes an access trace of what the kernel demanded
//! (`ondemand::Recorder`) and `--prefetch-list PATH` fetches such a trace ahead of the readers
//! on the next cold start (`ondemand::AccessTrace`), in few batched registry requests (with
//! `serve --image` of a Nydus image, the stored chunks the trace needs are fetched into
//! memory while the image mounts: `--prefetch-early`, on by default with `serve`; the
//! prefetch threads then default to nice 0; and what the prefetch wrote is read into the
//! mount's page cache ahead of the readers: `--warm-page-cache`, `ondemand::warm`);
//! `serve|fanotify --image` of a registry's Nydus image predicts without a trace
//! (`ondemand::predict`): a READ (an event) in a file fills the rest of the file
//! (`--predict-file`, at most 8 MiB by default) and of its directory's files
//! (`--predict-dir`, a span of at most 8 MiB) on the fill pool, the
//! libraries an ELF object a READ landed in needs once its bytes are in, and its interpreter
//! (`--predict-needed demanded`, the default; `all`, `off`), and a bytecode directory's
//! cousins (`--predict-cousins`, 8 MiB);
//! `--predict-entrypoint on` (off by default: measured, no faster) fetches the program the
//! image's config names, its interpreter and its libraries into memory while the image
//! mounts (`ondemand::predict::entrypoint`); with
//! `--mountpoint` prefetch starts once the mount is up (`--prefetch-at-open`: as objects open),
//! and the prefetch threads run at nice 10 (`--prefetch-nice N`; 0 with `--prefetch-early`); `hold` keeps the `/dev/cachefiles` fd (or the fanotify group) so that
//! `serve --supervisor` (`fanotify --supervisor`) daemons can die and be replaced while mounts
//! stay live (the successor sends `restore`, or reads the group's queued events); `mount` mounts an
//! image file-backed without any daemon when every blob is local, or says why not (exit 2).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use clap::{Parser, Subcommand};
use ondemand::failover::{self, Start};
use ondemand::{CachefilesDevice, Daemon, PrefetchConfig, Session, Shutdown, shutdown_on_signals};

#[derive(Parser)]
#[command(
    name = "erofs-ondemand",
    version,
    about = "EROFS over fscache: a cachefiles on-demand daemon",
    after_help = "Logging: RUST_LOG=debug logs every READ (default: info, one line per \
        OPEN and CLOSE and a summary at exit); RUST_LOG=warn keeps only problems. Lines carry \
        the UTC time to the millisecond."
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
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "image",
            conflicts_with = "image"
        )]
        blob_dir: Option<PathBuf>,
        /// Serve this image from its OCI registry (`[host[:port]/]repo[:tag|@digest]`; Nydus
        /// RAFS v6 or containerd EROFS layers) and mount its rootfs on --mountpoint.
        #[arg(long, value_name = "REF", requires = "mountpoint")]
        image: Option<String>,
        /// With --image: where the image's rootfs is mounted (until SIGINT/SIGTERM).
        #[arg(long, value_name = "DIR", requires = "image")]
        mountpoint: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
        /// The cache's tag (`tag` command).
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        serving: Serving,
        /// Experimental: complete each READ once its requested part is written and fill the
        /// readahead window afterwards (the reader waits for its own bytes only; more upcalls;
        /// no throughput gain measured yet).
        #[arg(long)]
        async_readahead: bool,
        /// Fail-over through the fd holder at this socket (`erofs-ondemand hold`): take over
        /// the cache it holds (adopt the fd, send `restore`), or bind a new one and hand it a
        /// copy of the fd.
        #[arg(long, value_name = "PATH")]
        supervisor: Option<PathBuf>,
        /// The cachefiles device.
        #[arg(long, value_name = "PATH", default_value = ondemand::DEFAULT_DEVICE_PATH, hide = true)]
        device: PathBuf,
    },
    /// Mount IMAGE on MOUNTPOINT read-only without a daemon (file-backed, Linux 6.12+) when
    /// every blob it needs is in --blob-dir (found by device tag); otherwise say why not
    /// (exit status 2: only EROFS over fscache with a daemon can serve it).
    Mount {
        /// Directory holding the image's blobs, each named by its device tag.
        #[arg(long, value_name = "DIR")]
        blob_dir: Option<PathBuf>,
        /// The image (bootstrap) file.
        image: PathBuf,
        /// Where to mount it.
        mountpoint: PathBuf,
    },
    /// Lazy pulling without fscache (Linux 7.2+): create the image's and its blobs' backing
    /// files sparse in --cache-dir, mark them for fanotify pre-content events, mount the image
    /// file-backed on --mountpoint and fill the files on demand from --blob-dir until
    /// SIGINT/SIGTERM, then unmount.
    Fanotify(FanotifyArgs),
    /// Hold the /dev/cachefiles fd for `serve --supervisor` daemons, so the cache and its
    /// mounts survive a daemon's death, until SIGINT/SIGTERM.
    Hold {
        /// The unix socket to listen on (created mode 0600).
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
}

/// The `fanotify` command's arguments.
#[derive(clap::Args)]
struct FanotifyArgs {
    /// Where the backing files are created, named by their keys (ext4, xfs or btrfs).
    #[arg(long, value_name = "DIR")]
    cache_dir: PathBuf,
    /// Directory holding the image and its blobs (plain files, or Nydus RAFS v6
    /// bootstraps and blobs, served decompressed). Without it, --image is a registry
    /// reference.
    #[arg(long, value_name = "DIR")]
    blob_dir: Option<PathBuf>,
    /// With --blob-dir: the image (bootstrap) file's name in the blob dir. Without: an image
    /// in an OCI registry (`[host[:port]/]repo[:tag|@digest]`; Nydus RAFS v6 or containerd
    /// EROFS layers), whose rootfs is mounted on --mountpoint.
    #[arg(long, value_name = "KEY|REF")]
    image: String,
    /// A blob device's file name in the blob dir, in device-table order (repeatable).
    /// Default: the device table's tags (Nydus images tag each device with its blob id).
    #[arg(long = "device", value_name = "KEY", requires = "blob_dir")]
    devices: Vec<String>,
    /// Where to mount the image; without it, only serve (for a mount made elsewhere of
    /// the files the log names).
    #[arg(long, value_name = "DIR")]
    mountpoint: Option<PathBuf>,
    /// The readahead of the mounts (suffixes K, M, G; 0 leaves the kernel's 128 KiB): each
    /// read request EROFS makes of an incomplete backing file is a pre-content event, and a
    /// larger readahead makes a sequential reader's requests larger and fewer.
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_bytes)]
    mount_readahead: u64,
    /// What an open of a backing file (an event with count 0) fills.
    #[arg(long, value_enum, default_value = "window")]
    on_open: OnOpen,
    /// Direct I/O on both sides of the backing files, as EROFS over cachefiles: fills are
    /// written with `O_DIRECT` and the mounts read the files with `directio` (no copy in the
    /// backing files' page cache, no write-back during the read). The default; accepted for
    /// scripts written when it was not.
    #[arg(long, conflicts_with = "buffered_io")]
    direct_io: bool,
    /// Buffered I/O on both sides of the backing files instead of direct I/O (fills written
    /// through the page cache, mounts without `directio`).
    #[arg(long)]
    buffered_io: bool,
    /// Allow an event once its own range is written, while the rest of its window still
    /// streams in from a registry (as cachefiles completes a READ).
    #[arg(long)]
    early_answer: bool,
    #[command(flatten)]
    serving: Serving,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Fail-over through the fd holder at this socket (`erofs-ondemand hold`): take over the
    /// fanotify group it holds (its marks and queued events; the mount is the first daemon's
    /// and stays), or create a group, mount, and hand the holder a copy of the group's fd.
    /// Under a holder, SIGTERM leaves the mount to a successor.
    #[arg(long, value_name = "PATH")]
    supervisor: Option<PathBuf>,
}

/// Registry options, for `--image REF` (both transports). `HTTPS_PROXY`, `HTTP_PROXY` and
/// `NO_PROXY` are honored.
#[derive(clap::Args, Clone, Debug, Default)]
struct RegistryArgs {
    /// A Docker config file with credentials (default: `$REGISTRY_AUTH_FILE`, else
    /// `~/.docker/config.json`).
    #[arg(long, value_name = "PATH")]
    auth_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the system's (repeatable).
    #[arg(long = "ca-file", value_name = "PATH")]
    ca_files: Vec<PathBuf>,
    /// A registry (`host[:port]`) to speak plain HTTP to (loopback registries always are);
    /// repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// A mirror URL tried before the registry; repeatable, tried in order.
    #[arg(long = "mirror", value_name = "URL")]
    mirrors: Vec<String>,
}

impl RegistryArgs {
    /// Resolve the manifest of `reference` with these options and start fetching the
    /// rest (`config`: and fetch the image's configuration beside it, for
    /// `--predict-entrypoint`); each Nydus blob's chunk map is fetched as soon as the
    /// bootstrap names it (the kernel opens the blobs right after reading the bootstrap).
    fn start_resolve(
        &self,
        reference: &str,
        with_config: bool,
    ) -> Result<ondemand::registry::ResolvingImage, String> {
        use ondemand::registry::{RemoteImage, ResolveOptions, lazy_config};
        let parsed: oci_lazy::Reference = reference
            .parse()
            .map_err(|e| format!("--image {reference}: {e}"))?;
        let mut config = oci_lazy::Config::default();
        config.ca_files = self.ca_files.clone();
        config.insecure_registries = self.insecure.clone();
        config.mirrors = self.mirrors.clone();
        config.auth_file = self.auth_file.clone();
        log::debug!("setting up the registry client");
        let client = oci_lazy::Client::new(lazy_config(config))
            .map_err(|e| format!("--image {reference}: {e}"))?;
        log::debug!("registry client ready");
        let options = ResolveOptions::default()
            .with_config(with_config)
            .with_chunk_maps_early(true);
        RemoteImage::start_resolve(&client, &parsed, options).map_err(|e| e.to_string())
    }

    /// [`start_resolve`](Self::start_resolve), waited for.
    fn resolve(
        &self,
        reference: &str,
        with_config: bool,
    ) -> Result<ondemand::registry::RemoteImage, String> {
        let image = self
            .start_resolve(reference, with_config)?
            .finish()
            .map_err(|e| e.to_string())?;
        log_resolved(&image);
        Ok(image)
    }
}

/// The image resolved, in the log.
fn log_resolved(image: &ondemand::registry::RemoteImage) {
    log::info!(
        "{}: {} ({} bytes of layers)",
        image.reference,
        match &image.kind {
            ondemand::registry::ImageKind::Nydus { blobs, .. } =>
                format!("Nydus RAFS v6, {} blobs", blobs.len()),
            ondemand::registry::ImageKind::ErofsLayers { layers } =>
                format!("{} EROFS layers", layers.len()),
        },
        image.size
    );
}

/// Print the registry totals against the image's size (for logs and the demo).
fn report_registry(store: &ondemand::registry::RegistryStore, image_size: u64) {
    let s = store.client().stats();
    println!(
        "erofs-ondemand: registry requests={} bytes={} retries={} image_bytes={} fetched_percent={:.2}",
        s.requests,
        s.bytes,
        s.retries,
        image_size,
        s.bytes as f64 * 100.0 / image_size.max(1) as f64
    );
}

/// How both transports serve: the same flags, the same defaults.
#[derive(clap::Args)]
struct Serving {
    /// Worker threads.
    #[arg(long, default_value_t = ondemand::DEFAULT_THREADS as u16, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Readahead window per READ (fanotify: per event), in bytes (suffixes K, M, G; 0 turns
    /// it off).
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_bytes)]
    readahead: u64,
    /// Fill ahead of sequential readers: after a READ that continues the previous one,
    /// answer it and go on filling past its window, twice as far each time the stream
    /// continues, up to BYTES (suffixes K, M, G; 0 turns it off). `fanotify` goes further
    /// once the stream is long: at least twice what it has read, past its window.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_bytes)]
    sequential_ahead: u64,
    /// Threads that run the fill ahead of sequential readers (and predicted fills) in
    /// chunks, in parallel, besides the worker that answered the READ (0: that worker alone;
    /// default: the CPUs but one, 1 to 8; at least 3 with cold prediction, `--image` of a
    /// registry's Nydus image).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=64))]
    fill_threads: Option<u16>,
    /// Each fill thread writes a chunk while it decodes the next, on a writer thread of its
    /// own (`Engine::with_write_behind`; default off: measured faster in three same-VM runs
    /// of four, slower in one).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, default_value = "off", action = clap::ArgAction::Set)]
    write_behind: bool,
    /// Cold prediction (`serve|fanotify --image` of a registry's Nydus image): when a READ
    /// (an event) lands in a file of at most BYTES, fill the rest of the file on the fill
    /// pool while the READ's window is filled (suffixes K, M, G; 0: off).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_bytes)]
    predict_file: u64,
    /// Cold prediction (as --predict-file): when a READ lands in a file whose directory's
    /// files span at most BYTES of the blob, fill that span too (0: off).
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_bytes)]
    predict_dir: u64,
    /// Cold prediction (with --predict-file): when an ELF object's header, dynamic section
    /// and library names are filled, fill the libraries it needs (found in the image as the
    /// dynamic loader finds them) whole, if at most --predict-file long, and theirs in turn:
    /// `off`; `demanded` (the objects a READ landed in, and the libraries found that way;
    /// the default); `all` (every ELF object filled, also those only guessed by
    /// --predict-dir). A demanded program's interpreter (`PT_INTERP`) is filled as soon as
    /// its head is read.
    #[arg(long, value_name = "off|demanded|all", default_value = "demanded", value_parser = parse_needed)]
    predict_needed: ondemand::predict::NeededRule,
    /// Cold prediction (as --predict-dir): when a READ lands in a file of directory
    /// GP/X/NAME, fill the files of every GP/*/NAME too if they span at most BYTES in all
    /// (python's `__pycache__` of the packages an import walks next; 0: off). They are
    /// fetched after what is queued, a READ's own file and directory before.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_bytes)]
    predict_cousins: u64,
    /// Cold prediction, `--image` of a Nydus image: fetch the program the image's config
    /// names (Entrypoint, else Cmd, looked up in its PATH), its interpreter and its
    /// libraries (found from their bytes), into memory while the image mounts, so the
    /// exec's and the loader's first READs wait for no round trip (whole if at most 2 MiB
    /// and --predict-file long, else the first and last chunk; one request for the config).
    /// Off by default (measured: no faster in the container start).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    predict_entrypoint: Option<bool>,
    /// Each worker's fill buffer (default: the readahead window, 64K to 4M).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    fill_buffer: Option<u64>,
    /// Rewrite this file with Prometheus metrics (atomically, every 500 ms, and at exit).
    #[arg(long, value_name = "PATH")]
    metrics: Option<PathBuf>,
    /// Prefetch every object whole in the background, the ranges named by the prefetch
    /// table of every Nydus RAFS v6 bootstrap in the blob dir first.
    #[arg(long)]
    prefetch: bool,
    /// Prefetch the data of PATH in the image whose bootstrap is BLOB-DIR/FSID, first
    /// (repeatable; directories are walked).
    #[arg(long, value_name = "FSID:PATH")]
    prefetch_path: Vec<String>,
    /// Prefetch threads.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    prefetch_threads: u16,
    /// Nice value of the prefetch threads (0-19; 0: as the other threads): higher lets the
    /// readers run first on a busy CPU. Default 10, or 0 when --prefetch-early fetches a
    /// trace's bytes before the mount (the prefetch then only decodes and writes what the
    /// readers are about to need).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=19))]
    prefetch_nice: Option<i32>,
    /// Prefetch bandwidth limit in bytes per second (suffixes K, M, G; 0: unlimited).
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_bytes)]
    prefetch_bandwidth: u64,
    /// Nydus RAFS v6 blobs: check each decoded chunk against the bootstrap's digest (a
    /// mismatch fails the read with EIO). Default: on with --image REF (a registry's bytes),
    /// off with --blob-dir; `--verify-digests` alone means on.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, num_args = 0..=1, default_missing_value = "on")]
    verify_digests: Option<bool>,
    /// Nydus RAFS v6 blobs: a fill whose chunks hold 512 KiB or more of compressed data
    /// decodes half of them on a helper thread spawned for it
    /// (`RafsServer::with_split_decode`). Default: off, as the library's: each fill decodes
    /// on its own thread (the fill pool decodes a sequential reader's chunks on several
    /// threads anyway; DESIGN.md "Session 15").
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    split_decode: Option<bool>,
    /// Record what the readers ask for in an access trace at PATH (replaced): each range the
    /// kernel demands (a READ, a pre-content event), once, in first-access order, keyed by
    /// blob id / layer digest / image key. Replay it with --prefetch-list. With `serve`,
    /// reads of bytes already present send no READ: record with `--readahead 0
    /// --sequential-ahead 0`, no prefetch and, for `--image`, `--predict-file 0 --predict-dir 0`
    /// for a complete trace.
    #[arg(long, value_name = "PATH")]
    record: Option<PathBuf>,
    /// Fetch the ranges of an access trace (written by --record) as their objects open, in
    /// the trace's order, with the prefetch threads, ahead of the readers (whose misses keep
    /// priority). With --prefetch, the rest of each object follows.
    #[arg(long, value_name = "PATH")]
    prefetch_list: Option<PathBuf>,
    /// With --prefetch-list and --image (Nydus): fetch the stored bytes of the chunks the
    /// trace needs into memory while the image mounts (in few requests, merged when at
    /// most --prefetch-early-gap apart), so the prefetch only decodes and writes them.
    /// Default: on with `serve` (measured there), off with `fanotify`.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    prefetch_early: Option<bool>,
    /// --prefetch-early: stored ranges at most BYTES apart are one request (suffixes K, M).
    #[arg(long, value_name = "BYTES", default_value = "128K", value_parser = parse_bytes)]
    prefetch_early_gap: u64,
    /// --prefetch-early: connections (threads) that fetch, each range after range (thread i
    /// takes ranges i, i+N, ... of the first-access order).
    #[arg(long, value_name = "N", default_value_t = ondemand::registry::DEFAULT_EARLY_CONNECTIONS as u16, value_parser = clap::value_parser!(u16).range(1..=16))]
    prefetch_early_connections: u16,
    /// `--image`: connections to the registry opened while the image mounts (one 1-byte
    /// range request each, at once), kept idle for the first READs and predicted fills
    /// (0, the default: off; measured, no faster on the emulated link, DESIGN.md
    /// "Registry connections opened while the image mounts"; at most 8, the client's
    /// parallel requests).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    warm_connections: u16,
    /// --prefetch-early: nice value of the threads that fetch (0-19; higher lets the mount
    /// they overlap run first on a busy CPU).
    #[arg(long, value_name = "N", default_value_t = ondemand::DEFAULT_PREFETCH_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
    prefetch_early_nice: i32,
    /// Prefetch as each object opens, during the mount. By default a daemon that mounts the
    /// image itself (--mountpoint) starts prefetching once the mount is up.
    #[arg(long)]
    prefetch_at_open: bool,
    /// `serve --image` of a Nydus image: once a prefetch job's ranges are in the cache
    /// files, read the files that hold them into the mount's page cache on a thread of its
    /// own (`ondemand::warm`), ahead of the readers. Default: on with --prefetch-list and
    /// no --prefetch (`true` with --prefetch reads the whole image into the page cache).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    warm_page_cache: Option<bool>,
    /// Once the mount is up (without --mountpoint: once the daemon serves), write `READY=1`
    /// and a newline to fd N, inherited from the parent, and close it (as s6's
    /// notification-fd: a reader that gets end-of-file instead knows the daemon failed).
    /// systemd's NOTIFY_SOCKET, when set, is sent `READY=1` as well.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(3..))]
    ready_fd: Option<i32>,
}

impl Serving {
    /// Whom to tell the daemon is ready: `--ready-fd` (taken now: call it before threads
    /// start) and systemd's `NOTIFY_SOCKET`.
    fn readiness(&self) -> Result<ondemand::ready::Readiness, String> {
        let ready = match self.ready_fd {
            Some(n) => ondemand::ready::Readiness::from_fd(n)
                .map_err(|e| format!("--ready-fd {n}: {e}"))?,
            None => ondemand::ready::Readiness::none(),
        };
        Ok(ready.with_notify_socket_from_env())
    }

    /// `server` with `--verify-digests` applied when it is given; without it the server
    /// keeps the library's default (on for a registry's bytes, off for a local blob dir's).
    fn verify_digests<B: ondemand::BlobStore>(
        &self,
        server: ondemand::rafs::RafsServer<B>,
    ) -> ondemand::rafs::RafsServer<B> {
        match self.verify_digests {
            Some(verify) => server.with_verify_digests(verify),
            None => server,
        }
    }

    /// `server` with `--verify-digests` and `--split-decode` applied when they are given (else
    /// the library's defaults).
    fn rafs_server<B: ondemand::BlobStore>(
        &self,
        server: ondemand::rafs::RafsServer<B>,
    ) -> ondemand::rafs::RafsServer<B> {
        let server = self.verify_digests(server);
        match self.split_decode {
            Some(on) => server.with_split_decode(on),
            None => server,
        }
    }

    /// Cold prediction's rules (`--predict-file`, `--predict-dir`, `--predict-needed`,
    /// `--predict-cousins`).
    fn rules(&self) -> ondemand::predict::Rules {
        ondemand::predict::Rules {
            whole_file: self.predict_file,
            directory: self.predict_dir,
            needed: self.predict_needed,
            cousins: self.predict_cousins,
        }
    }

    /// A predictor for a registry's image (`nydus`: a Nydus image), unless the rules are
    /// off; its map is set once the bootstrap is walked ([`walk_bootstrap`]).
    fn predictor(&self, nydus: bool) -> Option<Arc<ondemand::predict::Predictor>> {
        (nydus && self.rules().any()).then(|| Arc::new(ondemand::predict::Predictor::new()))
    }

    /// `--fill-threads`, or the library's default (without a predictor).
    fn fill_threads(&self) -> usize {
        self.fill_threads
            .map_or_else(ondemand::default_fill_threads, usize::from)
    }

    /// `--prefetch-nice`, or its default: 0 when the trace's bytes are fetched `early`
    /// (measured: faster in both container-start runs that compared), else
    /// [`ondemand::DEFAULT_PREFETCH_NICE`].
    fn prefetch_nice(&self, early: bool) -> i32 {
        self.prefetch_nice.unwrap_or(if early {
            0
        } else {
            ondemand::DEFAULT_PREFETCH_NICE
        })
    }

    /// Whether `--prefetch-early` applies: a trace, an image from a registry, and the flag
    /// (by default on with cachefiles, `serve`).
    fn early(&self, image: bool, cachefiles: bool) -> bool {
        image && self.prefetch_list.is_some() && self.prefetch_early.unwrap_or(cachefiles)
    }

    /// Whether `--warm-page-cache` is on (for a Nydus image served with `--image`): by
    /// default for a replayed trace alone (`--prefetch-list` without `--prefetch`, which
    /// would read the whole image into the page cache).
    fn warming(&self) -> bool {
        self.warm_page_cache
            .unwrap_or(self.prefetch_list.is_some() && !self.prefetch)
    }

    /// Whether `--predict-entrypoint` is on: off by default (measured with the container
    /// start: no faster, its early fetches and decoding slowed the mount and the exec on the
    /// guest's two CPUs; DESIGN.md, "The entrypoint rule").
    fn entrypoint(&self) -> bool {
        self.predict_entrypoint.unwrap_or(false)
    }

    /// `--predict-entrypoint`: the program's files fetched while `image` mounts.
    fn fetch_entrypoint(&self, image: &ondemand::registry::RemoteImage) {
        if self.entrypoint() {
            // The thread runs on its own (detached).
            drop(
                image.fetch_entrypoint_early(
                    ondemand::predict::entrypoint::Limits::DEFAULT,
                    self.predict_file
                        .min(ondemand::predict::entrypoint::EARLY_WHOLE_FILE),
                    usize::from(self.prefetch_early_connections),
                    self.prefetch_early_nice,
                ),
            );
        }
    }

    /// `--warm-connections`: the registry's connections opened while `image` mounts.
    fn warm_connections(&self, image: &ondemand::registry::RemoteImage) {
        let n = usize::from(self.warm_connections);
        if n > 0 {
            // The thread runs on its own (detached).
            drop(image.warm_connections(n));
        }
    }

    /// The access trace of --prefetch-list, if given.
    fn trace(&self) -> Result<Option<ondemand::AccessTrace>, String> {
        let Some(path) = &self.prefetch_list else {
            return Ok(None);
        };
        let trace = ondemand::AccessTrace::read(path)
            .map_err(|e| format!("--prefetch-list {}: {e}", path.display()))?;
        log::info!(
            "prefetch: {} ranges ({} bytes) of {} objects from the access trace {}{}",
            trace.entries().len(),
            trace.bytes(),
            trace.keys().len(),
            path.display(),
            match trace.skipped() {
                0 => String::new(),
                n => format!(" ({n} bad lines skipped)"),
            }
        );
        Ok(Some(trace))
    }

    /// The trace whose stored bytes `--prefetch-early` fetches while an image mounts, if any.
    fn early_trace<'t>(
        &self,
        trace: Option<&'t ondemand::AccessTrace>,
        cachefiles: bool,
    ) -> Option<&'t ondemand::AccessTrace> {
        trace.filter(|_| self.early(true, cachefiles))
    }

    /// `--prefetch-early`: the trace's stored bytes fetched while `image` mounts.
    fn fetch_early(
        &self,
        image: &ondemand::registry::RemoteImage,
        trace: Option<&ondemand::AccessTrace>,
        cachefiles: bool,
    ) {
        if let Some(trace) = self.early_trace(trace, cachefiles) {
            // The threads run on their own (detached).
            drop(image.fetch_trace_early(
                trace,
                self.prefetch_early_gap,
                usize::from(self.prefetch_early_connections),
                self.prefetch_early_nice,
            ));
        }
    }

    /// The prefetch configuration the flags ask for, if any (`trace`: [`Self::trace`];
    /// `early`: [`Self::early`]).
    fn prefetch_config(
        &self,
        blob_dir: Option<&std::path::Path>,
        trace: Option<&ondemand::AccessTrace>,
        early: bool,
    ) -> Result<Option<PrefetchConfig>, String> {
        if !self.prefetch && self.prefetch_path.is_empty() && self.prefetch_list.is_none() {
            return Ok(None);
        }
        let mut config = if self.prefetch {
            PrefetchConfig::whole_objects()
        } else {
            PrefetchConfig::listed_only()
        };
        config = config
            .with_threads(usize::from(self.prefetch_threads))
            .with_nice(self.prefetch_nice(early))
            .with_bandwidth(Some(self.prefetch_bandwidth));
        // A recorded trace comes first.
        if let Some(trace) = trace {
            config = config.with_trace(trace);
        }
        let Some(blob_dir) = blob_dir else {
            if !self.prefetch_path.is_empty() {
                return Err("--prefetch-path needs --blob-dir".into());
            }
            log::info!(
                "prefetch on: {}, {} threads",
                if self.prefetch {
                    "whole objects"
                } else {
                    "the access trace"
                },
                self.prefetch_threads
            );
            return Ok(Some(config));
        };
        if self.prefetch {
            // The prefetch tables of the RAFS v6 images in the blob dir come first.
            for fsid in ondemand::plan::rafs_bootstraps(blob_dir) {
                match ondemand::plan::rafs_prefetch_ranges(blob_dir, &fsid) {
                    Ok(ranges) => {
                        let bytes: u64 = ranges.values().map(|r| r.len()).sum();
                        if bytes > 0 {
                            log::info!("prefetch: {fsid}: prefetch table names {bytes} bytes");
                        }
                        for (key, set) in ranges {
                            config = config.with_ranges(&key, set.ranges().iter().cloned());
                        }
                    }
                    Err(e) => log::warn!("prefetch: {fsid}: prefetch table: {e}"),
                }
            }
        }
        for spec in &self.prefetch_path {
            let ranges =
                plan_paths(blob_dir, spec).map_err(|e| format!("--prefetch-path {spec}: {e}"))?;
            for (key, set) in ranges {
                config = config.with_ranges(&key, set.ranges().iter().cloned());
            }
        }
        log::info!(
            "prefetch on: {}, {} threads, bandwidth {}",
            if self.prefetch {
                "whole objects"
            } else {
                "listed ranges"
            },
            self.prefetch_threads,
            if self.prefetch_bandwidth == 0 {
                "unlimited".to_string()
            } else {
                format!("{} bytes/s", self.prefetch_bandwidth)
            }
        );
        Ok(Some(config))
    }
}

impl Serving {
    /// The access-trace recorder `--record` asks for, if any. `misses_only`: the transport
    /// sends requests for missing bytes only (cachefiles); `image`: served from a registry
    /// (`--image`, where cold prediction applies).
    fn recorder(
        &self,
        misses_only: bool,
        image: bool,
    ) -> Result<Option<Arc<ondemand::Recorder>>, String> {
        let Some(path) = &self.record else {
            return Ok(None);
        };
        let recorder = ondemand::Recorder::create(path)
            .map_err(|e| format!("--record {}: {e}", path.display()))?;
        let predicts = image && (self.predict_file > 0 || self.predict_dir > 0);
        if misses_only
            && (self.readahead > 0 || self.sequential_ahead > 0 || self.prefetch || predicts)
        {
            log::warn!(
                "--record: reads of bytes that readahead, fill ahead, prefetch or cold prediction \
                 brought send no READ, so the trace lists misses only; use --readahead 0 \
                 --sequential-ahead 0 --predict-file 0 --predict-dir 0 (and no --prefetch) for a \
                 complete trace"
            );
        }
        log::info!("recording the access trace in {}", path.display());
        Ok(Some(Arc::new(recorder)))
    }
}

/// `fanotify --on-open`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OnOpen {
    /// Nothing: reads send their own events.
    Nothing,
    /// One readahead window from the file position.
    Window,
    /// The whole file.
    Whole,
}

/// The `fanotify` command: a blob directory or a registry image.
fn fanotify(args: FanotifyArgs) -> ExitCode {
    // First, before any thread starts: the readiness fd taken, SIGINT/SIGTERM to a signalfd.
    let ready = match args.serving.readiness() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("erofs-ondemand: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = Shutdown::new();
    if let Err(e) = shutdown_on_signals(signal.clone()) {
        eprintln!("erofs-ondemand: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let trace = match args.serving.trace() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("erofs-ondemand: {e}");
            return ExitCode::FAILURE;
        }
    };
    let prefetch = match args.serving.prefetch_config(
        args.blob_dir.as_deref(),
        trace.as_ref(),
        args.serving.early(args.blob_dir.is_none(), false),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("erofs-ondemand: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.blob_dir.clone() {
        Some(dir) => {
            let server = args
                .serving
                .rafs_server(ondemand::rafs::RafsDirServer::new(&dir));
            fanotify_serve(server, args, prefetch, &signal, None, ready)
        }
        None => {
            if args.mountpoint.is_none() {
                eprintln!("erofs-ondemand: --image REF needs --mountpoint (or give --blob-dir)");
                return ExitCode::FAILURE;
            }
            let entrypoint = args.serving.entrypoint();
            let image = match args.registry.resolve(&args.image, entrypoint) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    return ExitCode::FAILURE;
                }
            };
            args.serving.warm_connections(&image);
            args.serving.fetch_early(&image, trace.as_ref(), false);
            args.serving.fetch_entrypoint(&image);
            let server = args.serving.rafs_server(image.server());
            let code = fanotify_serve(server, args, prefetch, &signal, Some(&image), ready);
            report_registry(image.store(), image.size);
            code
        }
    }
}

/// Serve `server` by fanotify until `signal`; mount the blob dir's image, or `remote`'s rootfs.
fn fanotify_serve<B: ondemand::BlobStore>(
    server: ondemand::rafs::RafsServer<B>,
    args: FanotifyArgs,
    prefetch: Option<PrefetchConfig>,
    signal: &Shutdown,
    remote: Option<&ondemand::registry::RemoteImage>,
    ready: ondemand::ready::Readiness,
) -> ExitCode {
    let FanotifyArgs {
        cache_dir,
        image,
        devices,
        mountpoint,
        mount_readahead,
        on_open,
        buffered_io,
        early_answer,
        serving,
        supervisor,
        ..
    } = args;
    // Direct I/O unless --buffered-io (--direct-io, the default, is accepted as well).
    let direct_io = !buffered_io;
    use ondemand::fanotify::{FanotifyDaemon, ImageFiles, ZeroCount};
    // Under a holder: the group it holds (a predecessor's), or a new one handed to it.
    let held = match &supervisor {
        Some(socket) => match failover::fetch_fd(socket) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("erofs-ondemand: --supervisor {}: {e}", socket.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let took_over = held.is_some();
    let daemon = match held {
        Some(group) => FanotifyDaemon::from_group(server, &cache_dir, group),
        None => FanotifyDaemon::new(server, &cache_dir),
    };
    let daemon = match daemon {
        Ok(d) => d,
        Err(e) => {
            eprintln!("erofs-ondemand: {e}");
            return ExitCode::FAILURE;
        }
    };
    let readahead = serving.readahead;
    let threads = serving.threads;
    let mut daemon = daemon
        .with_readahead(readahead)
        .with_sequential_ahead(serving.sequential_ahead)
        .with_fill_threads(serving.fill_threads())
        .with_write_behind(serving.write_behind)
        .with_threads(usize::from(threads))
        .with_direct_io(direct_io)
        .with_early_answer(early_answer)
        .with_zero_count(match on_open {
            OnOpen::Nothing => ZeroCount::Nothing,
            OnOpen::Window => ZeroCount::Window,
            OnOpen::Whole => ZeroCount::WholeFile,
        });
    if let Some(config) = prefetch {
        let held = mountpoint.is_some() && !took_over && !serving.prefetch_at_open;
        daemon = daemon.with_prefetch(config.held(held));
    }
    // Cold prediction for a registry's Nydus image, as `serve --image` (its map walked on a
    // thread of its own while the image mounts; events before it is ready are served as
    // without it).
    let rules = serving.rules();
    let predictor = serving.predictor(
        remote.is_some_and(|r| matches!(r.kind, ondemand::registry::ImageKind::Nydus { .. })),
    );
    if let Some(p) = &predictor {
        daemon = daemon.with_predictor(Arc::clone(p));
        // After the predictor, which raises the default (PREDICT_FILL_THREADS).
        if let Some(n) = serving.fill_threads {
            daemon = daemon.with_fill_threads(usize::from(n));
        }
    }
    match serving.recorder(false, false) {
        Ok(Some(recorder)) => daemon = daemon.with_recorder(recorder),
        Ok(None) => {}
        Err(e) => {
            eprintln!("erofs-ondemand: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &serving.metrics {
        daemon = daemon.with_metrics_file(path, Duration::from_millis(500));
    }
    if let Some(bytes) = serving.fill_buffer {
        daemon = daemon.with_fill_buffer(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    if supervisor.is_some() {
        // Under a holder, a successor answers the events this daemon leaves unanswered.
        let journal = cache_dir.join(ondemand::fanotify::EVENT_JOURNAL);
        daemon = match daemon.with_event_journal(&journal) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("erofs-ondemand: event journal: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    // The backing files: the blob dir's image and its devices, or each object the remote
    // image mounts (a Nydus bootstrap and its blobs, or every EROFS layer).
    let mut files: Vec<(String, ImageFiles)> = Vec::new();
    let keys: Vec<String> = match remote {
        Some(r) => r.mount_keys().into_iter().map(str::to_owned).collect(),
        None => vec![image.clone()],
    };
    let device_keys: Vec<&str> = devices.iter().map(String::as_str).collect();
    for key in keys {
        match daemon.add_image(&key, &device_keys) {
            Ok(f) => files.push((key, f)),
            Err(e) => {
                eprintln!("erofs-ondemand: {key}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (Some(socket), false) = (&supervisor, took_over) {
        use std::os::fd::AsFd;
        if let Err(e) = failover::store_fd(socket, daemon.as_fd()) {
            eprintln!("erofs-ondemand: --supervisor {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
        log::info!(
            "handed the fanotify group to the holder at {}",
            socket.display()
        );
    }
    if took_over {
        log::info!(
            "took over the fanotify group held by {}",
            supervisor
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    for (_, f) in &files {
        log::info!(
            "serving {} (devices {:?}) by fanotify pre-content events (readahead {readahead} bytes, {threads} threads)",
            f.image.display(),
            f.devices,
        );
    }
    let stop = daemon.shutdown_handle();
    let mut failed = false;
    let result = std::thread::scope(|s| {
        let serving = s.spawn(|| daemon.run());
        if let (Some(r), Some(p)) = (remote, predictor) {
            let walk = std::thread::Builder::new()
                .name("predict-map".into())
                .spawn_scoped(s, move || walk_bootstrap(r, rules, Some(p), None));
            if let Err(e) = walk {
                log::warn!("no thread for the bootstrap's walk: {e}");
            }
        }
        // The mount opens and reads the backing files: the daemon serves them already.
        let mounted = match (&mountpoint, remote) {
            // A predecessor's mount: it is live, served from now on by this daemon.
            (Some(_), _) if took_over => None,
            (Some(m), Some(r)) => {
                let mount_one = |key: &str, dir: &std::path::Path| {
                    let f = files.iter().find(|(k, _)| k == key).map(|(_, f)| f);
                    f.ok_or_else(|| std::io::Error::other(format!("no backing file for {key}")))?
                        .mount_as(dir, mount_readahead, direct_io)
                };
                match ondemand::registry::Rootfs::mount(r, &cache_dir, m, mount_one) {
                    Ok(rootfs) => {
                        log::info!("mounted {} on {}", r.reference, m.display());
                        Some(Mounted::Rootfs(rootfs))
                    }
                    Err(e) => {
                        eprintln!("erofs-ondemand: mounting {}: {e}", r.reference);
                        failed = true;
                        None
                    }
                }
            }
            (Some(m), None) => match files[0].1.mount_as(m, mount_readahead, direct_io) {
                Ok(()) => {
                    log::info!("mounted {} on {}", files[0].1.image.display(), m.display());
                    Some(Mounted::One(m.clone()))
                }
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    failed = true;
                    None
                }
            },
            (None, _) => None,
        };
        if !failed {
            tell_ready(ready);
        }
        daemon.engine().start_prefetch();
        while !failed && !signal.is_triggered() && !serving.is_finished() {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Unmount while still serving: once the group is gone, unfilled ranges read as zeros.
        // Under a holder the group outlives this daemon: the mount stays for a successor.
        if let (Some(m), None) = (mounted, &supervisor)
            && let Err(e) = m.unmount()
        {
            eprintln!("erofs-ondemand: {e}");
            failed = true;
        }
        stop.trigger();
        serving.join()
    });
    println!("erofs-ondemand: {}", daemon.stats());
    for o in daemon.objects() {
        println!(
            "erofs-ondemand: object {} size={} present={} marked={}",
            o.key.escape_ascii(),
            o.size,
            o.present,
            o.marked
        );
    }
    println!("erofs-ondemand: {}", daemon.server().totals());
    exit_code(result, failed)
}

/// A bound cachefiles device and how to serve it.
struct CachefilesRun<'a> {
    dev: CachefilesDevice,
    serving: &'a Serving,
    async_readahead: bool,
    prefetch: Option<PrefetchConfig>,
    /// `--record`.
    recorder: Option<Arc<ondemand::Recorder>>,
    /// `--prefetch-list`'s trace (fetched early with `--image`).
    trace: Option<&'a ondemand::AccessTrace>,
    /// Triggered by SIGINT/SIGTERM.
    shutdown: &'a Shutdown,
    cache_dir: &'a std::path::Path,
    /// Told once the rootfs is mounted (without one: once the daemon serves).
    ready: ondemand::ready::Readiness,
}

impl CachefilesRun<'_> {
    /// Serve `server` until SIGINT/SIGTERM. With `remote`, mount its rootfs on the mount
    /// point once the daemon serves (a Nydus bootstrap may still be on its way: the kernel
    /// creates the cache volume meanwhile, its OPEN of the bootstrap waits for it), and
    /// unmount it (still serving) at the signal.
    fn serve<B: ondemand::BlobStore>(
        self,
        server: ondemand::rafs::RafsServer<B>,
        remote: Option<(ondemand::registry::ResolvingImage, &std::path::Path)>,
    ) -> ExitCode {
        let serving = self.serving;
        let mut session = Session::new(server)
            .with_readahead(serving.readahead)
            .with_async_readahead(self.async_readahead)
            .with_sequential_ahead(serving.sequential_ahead)
            .with_write_behind(serving.write_behind);
        if let Some(config) = self.prefetch {
            let held = remote.is_some() && !serving.prefetch_at_open;
            session = session.with_prefetch(config.held(held));
        }
        if let Some(recorder) = self.recorder {
            session = session.with_recorder(recorder);
        }
        let rules = serving.rules();
        let nydus = remote.as_ref().is_some_and(|(image, _)| image.is_nydus());
        // A replayed trace's ranges read into the mount's page cache as the prefetch makes
        // them present.
        let warmer = match &remote {
            Some((_, m)) if nydus && serving.warming() => {
                match ondemand::warm::PageCacheWarmer::new(m) {
                    Ok(w) => Some(Arc::new(w)),
                    Err(e) => {
                        log::warn!("page cache warming off: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(w) = &warmer {
            session = session.with_prefetch_observer(Arc::clone(w) as _);
        }
        let predictor = serving.predictor(nydus);
        if let Some(predictor) = &predictor {
            session = session.with_predictor(Arc::clone(predictor));
        }
        // After the predictor, which raises the default (PREDICT_FILL_THREADS).
        if let Some(n) = serving.fill_threads {
            session = session.with_fill_threads(usize::from(n));
        }
        let mut daemon = Daemon::new(self.dev, session).with_threads(usize::from(serving.threads));
        if remote.is_none() {
            // The signal stops the daemon itself.
            daemon = daemon.with_shutdown(self.shutdown.clone());
        }
        if let Some(path) = &serving.metrics {
            daemon = daemon.with_metrics_file(path, Duration::from_millis(500));
        }
        if let Some(bytes) = serving.fill_buffer {
            daemon = daemon.with_fill_buffer(usize::try_from(bytes).unwrap_or(usize::MAX));
        }
        let stop = daemon.shutdown_handle();
        let mut failed = false;
        let result = std::thread::scope(|s| {
            let serving = s.spawn(|| daemon.run());
            if let Some((image, m)) = remote {
                let keys: Vec<String> = image.mount_keys().into_iter().map(str::to_owned).collect();
                let reference = image.reference.to_string();
                let (flags, trace) = (self.serving, self.trace);
                let (predictor, warmer) = (predictor.clone(), warmer.clone());
                // A replayed trace's early fetch must be under way before the kernel opens
                // the blobs: otherwise the prefetch at their OPEN fetches the same ranges a
                // second time. So with one, the mount waits for the bootstrap (as before
                // session 14); without, it goes ahead at once.
                let (early_started, early_wait) = std::sync::mpsc::channel::<()>();
                let wait_early = flags.early_trace(trace, true).is_some();
                // The bootstrap fetched, checked and parsed while the kernel creates the
                // cache volume and opens it; then what needs it: the early fetches, and the
                // bootstrap walked for cold prediction and the page cache warmer.
                let mut resolved = std::thread::Builder::new()
                    .name("predict-map".into())
                    .spawn_scoped(s, move || {
                        let image = image.finish()?;
                        log_resolved(&image);
                        flags.warm_connections(&image);
                        flags.fetch_early(&image, trace, true);
                        // Dropped unsent (a failed bootstrap) lets the mount go and fail.
                        let _ = early_started.send(());
                        flags.fetch_entrypoint(&image);
                        if predictor.is_some() || warmer.is_some() {
                            walk_bootstrap(&image, rules, predictor, warmer);
                        }
                        Ok::<_, ondemand::registry::ResolveError>(())
                    })
                    .inspect_err(|e| log::warn!("no thread for the bootstrap's walk: {e}"))
                    .ok();
                let mount_one = |key: &str, dir: &std::path::Path| {
                    ondemand::mount::mount_fscache(key, None, &[], dir)
                };
                if wait_early {
                    let _ = early_wait.recv();
                }
                log::debug!("mounting {reference} on {}", m.display());
                let mounted = match ondemand::registry::Rootfs::mount_keys(
                    &keys,
                    self.cache_dir,
                    m,
                    mount_one,
                ) {
                    Ok(rootfs) => {
                        log::info!("mounted {reference} on {}", m.display());
                        tell_ready(self.ready);
                        Some(rootfs)
                    }
                    Err(e) => {
                        // A bootstrap that did not come says why.
                        if let Some(Ok(Err(why))) = resolved.take().map(|t| t.join()) {
                            eprintln!("erofs-ondemand: fetching the bootstrap layer: {why}");
                        }
                        eprintln!("erofs-ondemand: mounting {reference}: {e}");
                        failed = true;
                        None
                    }
                };
                daemon.session().start_prefetch();
                while !failed && !self.shutdown.is_triggered() && !serving.is_finished() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                // Unmount while still serving, then stop.
                if let Some(rootfs) = mounted
                    && let Err(e) = rootfs.unmount()
                {
                    eprintln!("erofs-ondemand: {e}");
                    failed = true;
                }
                stop.trigger();
                // Joined here: a panic in the walk is that thread's alone.
                if let Some(t) = resolved {
                    let _ = t.join();
                }
            } else {
                // Bound and serving: OPENs queue on the device until a worker reads them.
                tell_ready(self.ready);
            }
            serving.join()
        });
        println!("erofs-ondemand: {}", daemon.session().stats());
        println!("erofs-ondemand: {}", daemon.session().server().totals());
        if let Some(w) = &warmer {
            let c = w.counts();
            println!(
                "erofs-ondemand: page cache warmed jobs={} files={} bytes={} errors={}",
                c.jobs, c.files, c.bytes, c.errors
            );
        }
        exit_code(result, failed)
    }
}

/// Say the daemon is ready (`--ready-fd`, `NOTIFY_SOCKET`); a reader that went away is
/// logged, not fatal: the daemon serves on.
fn tell_ready(ready: ondemand::ready::Readiness) {
    if let Err(e) = ready.notify() {
        log::warn!("telling the daemon is ready: {e}");
    }
}

/// The bootstrap of `image` walked (cold prediction's file map, the page cache warmer's).
fn walk_bootstrap(
    image: &ondemand::registry::RemoteImage,
    rules: ondemand::predict::Rules,
    predictor: Option<Arc<ondemand::predict::Predictor>>,
    warmer: Option<Arc<ondemand::warm::PageCacheWarmer>>,
) {
    match image.file_map(rules) {
        Some(Ok(map)) => {
            log::info!("file map: {} files mapped", map.files());
            // One map, shared by the warmer and the predictor.
            let map = Arc::new(map);
            if let Some(w) = &warmer {
                w.set_map(Arc::clone(&map));
            }
            if let Some(p) = predictor {
                p.set(map);
            }
        }
        Some(Err(e)) => log::warn!("cold prediction and page cache warming off: {e}"),
        None => {}
    }
}

/// What a command mounted, to unmount at the end.
enum Mounted {
    /// One mount point.
    One(PathBuf),
    /// A registry image's rootfs (its layers and their overlay).
    Rootfs(ondemand::registry::Rootfs),
}

impl Mounted {
    fn unmount(self) -> std::io::Result<()> {
        match self {
            Mounted::Rootfs(r) => r.unmount(),
            Mounted::One(m) => {
                use nix::mount::{MntFlags, umount2};
                match umount2(m.as_path(), MntFlags::empty()) {
                    Ok(()) => {
                        log::info!("unmounted {}", m.display());
                        Ok(())
                    }
                    Err(nix::errno::Errno::EBUSY) => {
                        log::warn!(
                            "{} is busy: detaching it lazily (its unfilled ranges will read as zeros)",
                            m.display()
                        );
                        umount2(m.as_path(), MntFlags::MNT_DETACH).map_err(|e| {
                            std::io::Error::other(format!("unmounting {}: {e}", m.display()))
                        })
                    }
                    Err(e) => Err(std::io::Error::other(format!(
                        "unmounting {}: {e}",
                        m.display()
                    ))),
                }
            }
        }
    }
}

/// The exit status of a serving thread's result.
fn exit_code(
    result: std::thread::Result<std::io::Result<ondemand::StatsSnapshot>>,
    failed: bool,
) -> ExitCode {
    match result {
        Ok(Ok(_)) if !failed => ExitCode::SUCCESS,
        Ok(Ok(_)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("erofs-ondemand: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("erofs-ondemand: the serving thread panicked");
            ExitCode::FAILURE
        }
    }
}

/// `on`/`off` (or `true`/`false`): the one spelling of every flag that takes a boolean
/// value (`--predict-entrypoint`, `--prefetch-early`, `--warm-page-cache`, `--write-behind`).
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// `off`, `demanded` or `all` (`--predict-needed`).
fn parse_needed(s: &str) -> Result<ondemand::predict::NeededRule, String> {
    use ondemand::predict::NeededRule;
    match s {
        "off" => Ok(NeededRule::Off),
        "demanded" => Ok(NeededRule::Demanded),
        "all" => Ok(NeededRule::All),
        _ => Err(format!("{s:?}: off, demanded or all")),
    }
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

/// `FSID:PATH`: the blob ranges holding PATH's data in the image BLOB_DIR/FSID.
fn plan_paths(
    blob_dir: &std::path::Path,
    spec: &str,
) -> Result<std::collections::HashMap<Vec<u8>, ondemand::RangeSet>, String> {
    let (fsid, path) = spec
        .split_once(':')
        .ok_or_else(|| "expected FSID:PATH".to_string())?;
    let image = ondemand::plan::open_image(blob_dir, fsid).map_err(|e| e.to_string())?;
    ondemand::plan::ranges_for_paths(&image, fsid.as_bytes(), &[], [path])
        .map_err(|e| e.to_string())
}

/// What to do when the cachefiles device cannot be opened.
fn device_hint(device: &std::path::Path, e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound if device == std::path::Path::new("/dev/cachefiles") => {
            " (load the cachefiles module: `modprobe cachefiles`; the kernel needs \
             CONFIG_CACHEFILES_ONDEMAND, Linux 5.19 to 7.1)"
        }
        std::io::ErrorKind::PermissionDenied => " (run as root, or with CAP_SYS_ADMIN)",
        std::io::ErrorKind::ResourceBusy => {
            " (another daemon holds it: each open binds one cache; stop it or use \
             `serve --supervisor` for a hand-over)"
        }
        _ => "",
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    log::debug!("erofs-ondemand {} started", env!("CARGO_PKG_VERSION"));
    let cli = Cli::parse();
    log::debug!("arguments parsed");
    match cli.command {
        Cmd::Serve {
            cache_dir,
            blob_dir,
            image,
            mountpoint,
            registry,
            tag,
            serving,
            async_readahead,
            supervisor,
            device,
        } => {
            // First, before any thread starts: the readiness fd taken, SIGINT/SIGTERM to a
            // signalfd.
            let ready = match serving.readiness() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let shutdown = Shutdown::new();
            if let Err(e) = shutdown_on_signals(shutdown.clone()) {
                eprintln!("erofs-ondemand: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
            // The manifest resolved before the cache is bound: a bad reference binds
            // nothing. A Nydus bootstrap is fetched from here on while the cache is bound
            // and the image mounts.
            let remote = match &image {
                Some(reference) => match registry.start_resolve(reference, serving.entrypoint()) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        eprintln!("erofs-ondemand: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                None => None,
            };
            let trace = match serving.trace() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let early = serving.early(remote.is_some(), true);
            let prefetch = match serving.prefetch_config(blob_dir.as_deref(), trace.as_ref(), early)
            {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = std::fs::create_dir_all(&cache_dir) {
                eprintln!("erofs-ondemand: cannot create {}: {e}", cache_dir.display());
                return ExitCode::FAILURE;
            }
            let recorder = match serving.recorder(true, image.is_some()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("erofs-ondemand: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let dev = match &supervisor {
                Some(socket) => {
                    match failover::take_over_or_bind(socket, &device, &cache_dir, tag.as_deref()) {
                        Ok((dev, Start::TookOver)) => {
                            log::info!(
                                "took over the cache held by {} and sent restore (--cache-dir and --tag are those of the first daemon)",
                                socket.display()
                            );
                            dev
                        }
                        Ok((dev, Start::Bound)) => {
                            log::info!(
                                "bound the cache and handed the device fd to the holder at {}",
                                socket.display()
                            );
                            dev
                        }
                        Err(e) => {
                            eprintln!("erofs-ondemand: --supervisor {}: {e}", socket.display());
                            return ExitCode::FAILURE;
                        }
                    }
                }
                None => {
                    let dev = match CachefilesDevice::open_path(&device) {
                        Ok(d) => d,
                        Err(e) => {
                            eprintln!(
                                "erofs-ondemand: cannot open {}: {e}{}",
                                device.display(),
                                device_hint(&device, &e)
                            );
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
                    dev
                }
            };
            let run = CachefilesRun {
                dev,
                serving: &serving,
                async_readahead,
                prefetch,
                recorder,
                trace: trace.as_ref(),
                shutdown: &shutdown,
                cache_dir: &cache_dir,
                ready,
            };
            match (remote, &mountpoint, &blob_dir) {
                (Some(image), Some(m), _) => {
                    log::info!(
                        "serving {} from its registry (cache {}, {} threads, readahead {} bytes)",
                        image.reference,
                        cache_dir.display(),
                        serving.threads,
                        serving.readahead
                    );
                    let server = serving.rafs_server(image.server());
                    let (store, size) = (image.store().clone(), image.size);
                    let code = run.serve(server, Some((image, m.as_path())));
                    report_registry(&store, size);
                    code
                }
                (_, _, Some(dir)) => {
                    log::info!(
                        "serving blobs from {} (cache {}, {} threads, readahead {} bytes, sequential ahead up to {} bytes)",
                        dir.display(),
                        cache_dir.display(),
                        serving.threads,
                        serving.readahead,
                        serving.sequential_ahead
                    );
                    // Nydus RAFS v6 images in the blob dir are served decompressed
                    // (ondemand::rafs); every other cookie key names a plain file.
                    let server = serving.rafs_server(ondemand::rafs::RafsDirServer::new(dir));
                    run.serve(server, None)
                }
                _ => {
                    eprintln!("erofs-ondemand: give --blob-dir, or --image and --mountpoint");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Mount {
            blob_dir,
            image,
            mountpoint,
        } => match ondemand::mount::mount_image(&image, blob_dir.as_deref(), &mountpoint) {
            Ok(mode @ ondemand::mount::Mode::FileBacked { .. }) => {
                println!(
                    "erofs-ondemand: mounted {} on {}: {mode}",
                    image.display(),
                    mountpoint.display()
                );
                ExitCode::SUCCESS
            }
            Ok(mode) => {
                println!("erofs-ondemand: not mounted: {mode}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("erofs-ondemand: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Fanotify(args) => fanotify(args),
        Cmd::Hold { socket } => {
            let shutdown = Shutdown::new();
            if let Err(e) = shutdown_on_signals(shutdown.clone()) {
                eprintln!("erofs-ondemand: cannot handle signals: {e}");
                return ExitCode::FAILURE;
            }
            let holder = match failover::FdHolder::bind(&socket) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("erofs-ondemand: cannot listen on {}: {e}", socket.display());
                    return ExitCode::FAILURE;
                }
            };
            log::info!("holding cachefiles fds on {}", socket.display());
            match holder.serve(&shutdown) {
                Ok(()) => ExitCode::SUCCESS,
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
        let Cmd::Serve { serving, tag, .. } = cli.command else {
            panic!("parsed as serve");
        };
        assert_eq!((serving.readahead, serving.threads, tag), (0, 4, None));
        // The help shows these defaults as "8M" and "4M": they must stay the library's.
        assert_eq!(serving.sequential_ahead, ondemand::DEFAULT_SEQUENTIAL_AHEAD);
        assert!(!serving.write_behind, "--write-behind is off by default");
        let behind = |v: &str| {
            let cli = parse_serve_image(&["--write-behind", v])?;
            let Cmd::Serve { serving, .. } = cli.command else {
                panic!("parsed as serve");
            };
            Ok::<_, clap::Error>(serving.write_behind)
        };
        assert!(behind("on").unwrap());
        assert!(!behind("off").unwrap());
        assert!(behind("maybe").is_err());
    }

    #[test]
    fn image_flags_parse() {
        let cli = Cli::try_parse_from([
            "erofs-ondemand",
            "serve",
            "--cache-dir",
            "/c",
            "--image",
            "127.0.0.1:5000/app:v1",
            "--mountpoint",
            "/mnt",
            "--mirror",
            "http://m1",
            "--mirror",
            "http://m2",
            "--insecure-registry",
            "reg:5000",
            "--ca-file",
            "/ca.pem",
            "--auth-file",
            "/auth.json",
        ])
        .unwrap();
        let Cmd::Serve {
            image,
            mountpoint,
            registry,
            blob_dir,
            ..
        } = cli.command
        else {
            panic!("parsed as serve");
        };
        assert_eq!(image.as_deref(), Some("127.0.0.1:5000/app:v1"));
        assert_eq!(mountpoint, Some(PathBuf::from("/mnt")));
        assert_eq!(blob_dir, None);
        assert_eq!(registry.mirrors, ["http://m1", "http://m2"], "in order");
        assert_eq!(registry.insecure, ["reg:5000"]);
        assert_eq!(registry.ca_files, [PathBuf::from("/ca.pem")]);
        assert_eq!(registry.auth_file, Some(PathBuf::from("/auth.json")));
        // --image needs --mountpoint and excludes --blob-dir; one of them is needed.
        for bad in [
            &["--image", "r"][..],
            &["--image", "r", "--mountpoint", "/m", "--blob-dir", "/b"],
            &[],
        ] {
            let mut args = vec!["erofs-ondemand", "serve", "--cache-dir", "/c"];
            args.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from([
            "erofs-ondemand",
            "fanotify",
            "--cache-dir",
            "/c",
            "--image",
            "127.0.0.1:5000/app:v1",
            "--mountpoint",
            "/mnt",
        ])
        .unwrap();
        let Cmd::Fanotify(args) = cli.command else {
            panic!("parsed as fanotify");
        };
        assert_eq!(args.blob_dir, None);
    }

    /// `serve --image r --mountpoint /m` with `more` flags, parsed.
    fn parse_serve_image(more: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "erofs-ondemand",
            "serve",
            "--cache-dir",
            "/c",
            "--image",
            "r",
            "--mountpoint",
            "/m",
        ];
        args.extend_from_slice(more);
        Cli::try_parse_from(&args)
    }

    /// [`parse_serve_image`], which must parse: its serving flags.
    fn serve_image(more: &[&str]) -> Serving {
        let Cmd::Serve { serving, .. } = parse_serve_image(more).unwrap().command else {
            panic!("parsed as serve");
        };
        serving
    }

    /// `--split-decode`: off (the library's default) unless turned on.
    #[test]
    fn fills_decode_on_their_own_thread_unless_split_is_asked_for() {
        let splits = |more: &[&str]| {
            serve_image(more)
                .rafs_server(ondemand::rafs::RafsDirServer::new("/nonexistent"))
                .splits_decode()
        };
        assert!(!splits(&[]));
        assert!(splits(&["--split-decode", "on"]));
        assert!(!splits(&["--split-decode", "off"]));
        assert!(parse_serve_image(&["--split-decode", "maybe"]).is_err());
    }

    #[test]
    fn the_entrypoint_rule_is_off_unless_asked_for() {
        let entrypoint = |more: &[&str]| serve_image(more).entrypoint();
        assert!(!entrypoint(&[]));
        assert!(entrypoint(&["--predict-entrypoint", "on"]));
        assert!(entrypoint(&["--predict-entrypoint", "true"]));
        assert!(!entrypoint(&["--predict-entrypoint", "off"]));
        assert!(parse_serve_image(&["--predict-entrypoint", "maybe"]).is_err());
    }

    #[test]
    fn chunk_digests_are_checked_for_a_registrys_bytes_unless_turned_off() {
        // `remote`: the server as the library makes it for a registry's bytes (on:
        // `RemoteImage::server`, whose default registry_serving's a_changed_blob_byte test
        // shows), else a local blob dir's (off).
        let verify = |more: &[&str], remote: bool| {
            let server = ondemand::rafs::RafsDirServer::new("/nonexistent");
            let server = if remote {
                server.with_verify_digests(true)
            } else {
                server
            };
            serve_image(more).verify_digests(server).verifies_digests()
        };
        assert!(verify(&[], true), "a registry's bytes are checked");
        assert!(!verify(&[], false), "a local blob dir's are not");
        // Alone (as before it took a value), before another flag, or with a value.
        assert!(verify(&["--verify-digests"], false));
        assert!(verify(&["--verify-digests", "--prefetch"], false));
        assert!(verify(&["--verify-digests", "on"], false));
        assert!(!verify(&["--verify-digests", "off"], true));
        assert!(parse_serve_image(&["--verify-digests", "maybe"]).is_err());
    }

    #[test]
    fn the_early_fetch_is_on_with_serve_and_a_trace_unless_turned_off() {
        let early = |more: &[&str]| serve_image(more).early(true, true);
        assert!(!early(&[]));
        assert!(early(&["--prefetch-list", "/t"]));
        for off in ["off", "false"] {
            assert!(!early(&["--prefetch-list", "/t", "--prefetch-early", off]));
        }
        assert!(parse_serve_image(&["--prefetch-early", "maybe"]).is_err());
    }

    #[test]
    fn page_cache_warming_is_on_for_a_replayed_trace_alone() {
        let warming = |more: &[&str]| serve_image(more).warming();
        assert!(!warming(&[]));
        assert!(warming(&["--prefetch-list", "/t"]));
        assert!(!warming(&["--prefetch-list", "/t", "--prefetch"]));
        assert!(!warming(&[
            "--prefetch-list",
            "/t",
            "--warm-page-cache",
            "false"
        ]));
        assert!(warming(&["--prefetch", "--warm-page-cache", "true"]));
        assert!(warming(&["--prefetch", "--warm-page-cache", "on"]));
        assert!(!warming(&[
            "--prefetch-list",
            "/t",
            "--warm-page-cache",
            "off"
        ]));
        assert!(parse_serve_image(&["--warm-page-cache", "maybe"]).is_err());
    }

    #[test]
    fn fanotify_command_parses() {
        let cli = Cli::try_parse_from([
            "erofs-ondemand",
            "fanotify",
            "--cache-dir",
            "/c",
            "--blob-dir",
            "/b",
            "--image",
            "boot",
            "--device",
            "blob1",
            "--device",
            "blob2",
            "--on-open",
            "nothing",
        ])
        .unwrap();
        let Cmd::Fanotify(FanotifyArgs {
            image,
            devices,
            mountpoint,
            serving,
            on_open,
            mount_readahead,
            direct_io,
            buffered_io,
            early_answer,
            ..
        }) = cli.command
        else {
            panic!("parsed as fanotify");
        };
        // Direct I/O (not buffered) and no early answer by default, as `FanotifyDaemon`.
        assert_eq!(
            (direct_io, buffered_io, early_answer),
            (false, false, false)
        );
        assert_eq!((image.as_str(), devices.len()), ("boot", 2));
        // The help shows the default as "4M": it must stay the library's.
        assert_eq!(mount_readahead, ondemand::fanotify::MOUNT_READAHEAD);
        // The same defaults as `serve`.
        assert_eq!(
            (
                mountpoint,
                serving.readahead,
                serving.threads,
                serving.sequential_ahead,
                serving.fill_threads(),
                serving.rules()
            ),
            (
                None,
                1 << 20,
                ondemand::DEFAULT_THREADS as u16,
                8 << 20,
                ondemand::default_fill_threads(),
                ondemand::predict::Rules::DEFAULT
            )
        );
        assert!(matches!(on_open, OnOpen::Nothing));
        let switched = Cli::try_parse_from([
            "erofs-ondemand",
            "fanotify",
            "--cache-dir",
            "/c",
            "--image",
            "boot",
            "--direct-io",
            "--early-answer",
        ])
        .unwrap();
        assert!(matches!(
            switched.command,
            Cmd::Fanotify(FanotifyArgs {
                direct_io: true,
                buffered_io: false,
                early_answer: true,
                ..
            })
        ));
        let fanotify = [
            "erofs-ondemand",
            "fanotify",
            "--cache-dir",
            "/c",
            "--image",
            "b",
        ];
        let buffered = Cli::try_parse_from([&fanotify[..], &["--buffered-io"]].concat()).unwrap();
        assert!(matches!(
            buffered.command,
            Cmd::Fanotify(FanotifyArgs {
                direct_io: false,
                buffered_io: true,
                ..
            })
        ));
        assert!(
            Cli::try_parse_from([&fanotify[..], &["--buffered-io", "--direct-io"]].concat())
                .is_err(),
            "--buffered-io and --direct-io conflict"
        );
        assert!(
            Cli::try_parse_from(["erofs-ondemand", "fanotify", "--cache-dir", "/c"]).is_err(),
            "--image is required"
        );
    }
}
