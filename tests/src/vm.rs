//! Real-kernel tests: boot a test kernel from `../shared/vm` under qemu with an initramfs this
//! module packs, run a shell script in the guest and hand its results to the host test.
//!
//! The guest side is busybox (from Debian's `busybox-static`, `/bin/busybox`) with
//! `tests/vm/init.sh` as `/init`. That script mounts `proc`, `sysfs`, `devtmpfs`, mounts the
//! ext4 disk (`/dev/vda`) on `/data`, sources the test's script as `/vmtest/test.sh` and
//! reboots, which ends qemu (`-no-reboot`). The script reports with shell helpers:
//!
//! | helper | line it prints |
//! | --- | --- |
//! | `pass NAME` | `VMTEST PASS NAME` |
//! | `fail NAME WHY…` | `VMTEST FAIL NAME: WHY…` |
//! | `data KEY VALUE` | `VMTEST DATA KEY=VALUE` |
//! | `check NAME CMD…` | PASS if `CMD` exits 0, else FAIL with its status and output |
//! | `check_fails NAME CMD…` | PASS if `CMD` fails |
//! | `verify_tree NAME DIR` | `NAME-sums`, `NAME-stats`: `DIR` matches the [`manifests`] of a host tree |
//!
//! Besides busybox the guest has `/bin/vmtool` ([`guest_tool`]): timed reads with nanosecond
//! resolution and errno names, and file-backed mounts (busybox `mount` always uses a loop
//! device for a file).
//!
//! Result lines go to the second serial port (a file on the host), so kernel messages on the
//! console cannot tear them; the console is kept for the failure report. A run is good when
//! the script reached its end (`VMTEST END rc=0`), no check failed, and every check the host
//! test names in [`VmOutcome::assert_passed`] passed (so a script that silently skips a check
//! fails the test).
//!
//! ```no_run
//! use tests::vm::{Kernel, VmRun};
//! let Some(out) = VmRun::new("hello")
//!     .kernel(Kernel::V6_12)
//!     .script("check has-cachefiles test -c /dev/cachefiles\n")
//!     .run()
//! else {
//!     return; // qemu missing and EROFS_TESTS_ALLOW_SKIP=1
//! };
//! out.assert_passed(&["has-cachefiles"]);
//! ```
//!
//! Files reach the guest two ways: [`VmRun::file`] puts them into the initramfs (small things:
//! binaries, scripts), [`VmRun::disk_file`] onto the ext4 disk (`mkfs.ext4 -d`), where file-backed
//! EROFS mounts work (the kernel refuses them from the initramfs with `ENOTBLK`) and where the
//! cachefiles cache directory must live (it refuses tmpfs).
//!
//! Static guest programs are built by [`static_binary`] into a target directory of their own
//! (`$EROFS_VM_TARGET_DIR`, else `$CARGO_TARGET_DIR/vm-static`, else `target/vm-static`) so the
//! host build is never invalidated.
//!
//! Networking is off unless asked for: [`VmRun::user_net`] adds a `virtio-net` card on qemu's
//! user network, through which the guest reaches servers on the host's 127.0.0.1 at
//! [`GUEST_HOST`] (`10.0.2.2`); a registry on the host behind a [`netem`](crate::netem) link
//! is then a remote registry to the guest, whose CPU does not serve it.
//!
//! The machine: qemu with software emulation (`EROFS_VM_ACCEL=kvm` to try KVM), two CPUs as
//! two sockets (the kernels have no ACPI and find CPUs through SeaBIOS's MP table, which lists
//! sockets only), the TSC as clocksource ([`BASE_CMDLINE`]). One VM runs at a time per test
//! process. Each run's files are in `target/tmp/vm-NAME` (the disk image is deleted unless
//! `EROFS_VM_KEEP=1`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{require_tool, scratch_dir, shared_dir, workspace_root};

/// The kernel command line of every run. Without a clocksource the tinyconfig kernels run on
/// `refined-jiffies` (4 ms resolution, HZ=250), too coarse to time reads; the TSC is fine
/// under qemu.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet clocksource=tsc tsc=reliable";

/// The `/init` script of every VM run.
const INIT_SCRIPT: &str = include_str!("../vm/init.sh");

/// Which test kernel to boot (see `../shared/vm/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Linux 6.12: EROFS over fscache, `/dev/cachefiles` with `bind ondemand`, file-backed mounts.
    V6_12,
    /// Linux 7.2: fanotify pre-content events; no EROFS fscache mode.
    V7_2,
}

impl Kernel {
    /// The bzImage in the shared directory.
    pub fn image(self) -> PathBuf {
        let name = match self {
            Kernel::V6_12 => "linux-6.12.bzImage",
            Kernel::V7_2 => "linux-7.2.bzImage",
        };
        shared_dir().join("vm").join(name)
    }
}

/// Where the static guest binaries are built.
pub fn static_target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EROFS_VM_TARGET_DIR") {
        return PathBuf::from(d);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("vm-static"),
        None => workspace_root().join("target/vm-static"),
    }
}

/// The target triple of the static guest binaries.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Serialises the cargo invocations of one test process (cargo's own lock would do too, but
/// this keeps their output in one piece).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// One VM at a time per test process: the machine has few cores, and the tests that time
/// reads must not compete with another guest.
static VM_LOCK: Mutex<()> = Mutex::new(());

/// Build binary `bin` of workspace package `package` with `features` as a static release
/// executable for the guest and return its path.
///
/// Runs `cargo build --release --target x86_64-unknown-linux-gnu -p PACKAGE --bin BIN` with
/// `RUSTFLAGS="-C target-feature=+crt-static"` in [`static_target_dir`]. Panics with cargo's
/// output if the build fails.
pub fn static_binary(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    let mut cmd = cargo_static(&workspace_root().join("Cargo.toml"));
    cmd.args(["-p", package, "--bin", bin]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    build_static(cmd, bin)
}

/// Build the guest helper `vmtool` (`tests/vm/guest`, a workspace of its own), which every
/// run puts at `/bin/vmtool`: timed reads with nanosecond resolution and errno names
/// (`vmtool read [--bs BYTES] FILE...` prints `bytes=N ns=T`, or
/// `error: FILE: … errno=N name=ENAME` and exits 1), and file-backed mounts
/// (`vmtool mount FSTYPE SOURCE TARGET [OPTIONS]`; busybox `mount` would use a loop device),
/// and how the page cache holds files (`vmtool pages FILE...`: cached pages, their physically
/// contiguous runs, pages in large folios).
pub fn guest_tool() -> PathBuf {
    let cmd = cargo_static(&workspace_root().join("tests/vm/guest/Cargo.toml"));
    build_static(cmd, "vmtool")
}

fn cargo_static(manifest: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--target")
        .arg(GUEST_TARGET)
        .arg("--manifest-path")
        .arg(manifest)
        .env("CARGO_TARGET_DIR", static_target_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Smaller binaries and a faster build; the guest never runs a debugger.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_TERM_COLOR", "never");
    cmd
}

fn build_static(mut cmd: Command, bin: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "static build failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = static_target_dir()
        .join(GUEST_TARGET)
        .join("release")
        .join(bin);
    assert!(path.is_file(), "{} was not built", path.display());
    assert_static(&path);
    path
}

/// Panic unless `path` is an ELF executable without a program interpreter (statically linked):
/// the guest has no dynamic loader, and a dynamic `/init` only shows up as a kernel panic.
pub fn assert_static(path: &Path) {
    match elf_interpreter(path) {
        Ok(None) => {}
        Ok(Some(interp)) => panic!(
            "{} is dynamically linked (interpreter {interp}); the VM needs static binaries",
            path.display()
        ),
        Err(e) => panic!("{}: not a usable ELF executable: {e}", path.display()),
    }
}

/// The `PT_INTERP` of a 64-bit little-endian ELF file, if any.
fn elf_interpreter(path: &Path) -> io::Result<Option<String>> {
    const PT_INTERP: u32 = 3;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut f = File::open(path)?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let phoff = u64_at(&eh, 0x20);
    let phentsize = u64::from(u16_at(&eh, 0x36));
    let phnum = u64::from(u16_at(&eh, 0x38));
    if phentsize < 56 || phnum > 256 {
        return Err(bad("odd program header table"));
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset overflows"))?;
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut ph)?;
        if u32_at(&ph, 0) == PT_INTERP {
            let (off, size) = (u64_at(&ph, 8), u64_at(&ph, 32).min(4096));
            let mut name = vec![0u8; usize::try_from(size).expect("at most 4096")];
            f.seek(SeekFrom::Start(off))?;
            f.read_exact(&mut name)?;
            let name = String::from_utf8_lossy(&name);
            return Ok(Some(name.trim_end_matches('\0').to_string()));
        }
    }
    Ok(None)
}

/// The shared libraries `ldd` lists for `bin` (absolute paths, the loader included).
pub fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let out = crate::run(Command::new("ldd").arg(bin));
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A static busybox for the guest: `$BUSYBOX`, else `/bin/busybox` or `/usr/bin/busybox`
/// (Debian's `busybox-static`). `None` (after [`crate::missing`]) if there is none.
pub fn busybox() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("BUSYBOX").map(PathBuf::from),
        Some(PathBuf::from("/bin/busybox")),
        Some(PathBuf::from("/usr/bin/busybox")),
    ];
    for p in candidates.into_iter().flatten() {
        if p.is_file() && matches!(elf_interpreter(&p), Ok(None)) {
            return Some(p);
        }
    }
    crate::missing("the VM tests need a static busybox (apt-get install busybox-static)")?;
    None
}

/// One entry of an initramfs.
#[derive(Clone, Debug)]
enum Entry {
    Dir,
    File { data: Source, mode: u32 },
    Symlink(String),
}

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// A `newc` cpio archive for the kernel's initramfs unpacker, written by hand (the format is
/// 110 bytes of ASCII hex per entry).
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !parent.is_empty() {
                self.entries.insert(parent.to_string(), Entry::Dir);
            }
            p = parent;
        }
    }

    fn key(path: &str) -> String {
        let key = path.trim_start_matches('/').to_string();
        assert!(
            !key.is_empty() && !key.split('/').any(|c| c.is_empty() || c == ".."),
            "bad initramfs path {path:?}"
        );
        key
    }

    /// A directory (parents are created as needed).
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let key = Self::key(path);
        self.add_parents(&key);
        self.entries.insert(key, Entry::Dir);
        self
    }

    /// A regular file copied from the host at write time.
    pub fn file(&mut self, path: &str, host: &Path, mode: u32) -> &mut Self {
        let key = Self::key(path);
        self.add_parents(&key);
        let data = Source::Host(host.to_path_buf());
        self.entries.insert(key, Entry::File { data, mode });
        self
    }

    /// A regular file with the given contents.
    pub fn bytes(&mut self, path: &str, bytes: &[u8], mode: u32) -> &mut Self {
        let key = Self::key(path);
        self.add_parents(&key);
        let data = Source::Bytes(bytes.to_vec());
        self.entries.insert(key, Entry::File { data, mode });
        self
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let key = Self::key(path);
        self.add_parents(&key);
        self.entries.insert(key, Entry::Symlink(target.to_string()));
        self
    }

    /// Write the archive (parents sort before their children in the map, as the unpacker needs).
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut ino = 1u32;
        for (name, entry) in &self.entries {
            ino += 1;
            match entry {
                Entry::Dir => write_newc(out, ino, 0o040_755, name, 0, &mut io::empty())?,
                Entry::Symlink(target) => write_newc(
                    out,
                    ino,
                    0o120_777,
                    name,
                    target.len() as u64,
                    &mut target.as_bytes(),
                )?,
                Entry::File { data, mode } => {
                    let mode = 0o100_000 | (mode & 0o7777);
                    match data {
                        Source::Bytes(b) => {
                            write_newc(out, ino, mode, name, b.len() as u64, &mut b.as_slice())?
                        }
                        Source::Host(p) => {
                            let f = File::open(p).map_err(|e| {
                                io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                            })?;
                            let len = f.metadata()?.len();
                            write_newc(out, ino, mode, name, len, &mut f.take(len))?
                        }
                    }
                }
            }
        }
        write_newc(out, 0, 0, "TRAILER!!!", 0, &mut io::empty())
    }

    /// Write the archive to a file.
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        let mut w = BufWriter::new(File::create(path)?);
        self.write_to(&mut w)?;
        w.flush()
    }
}

fn write_newc(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    name: &str,
    size: u64,
    data: &mut impl Read,
) -> io::Result<()> {
    let size32 = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB")))?;
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let namesize = name.len() + 1;
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for field in [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        u32::try_from(namesize).expect("short names"),
        0, // check
    ] {
        write!(header, "{field:08x}").expect("writing to a String");
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..pad4(110 + namesize)])?;
    let copied = io::copy(data, out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{name}: {copied} bytes instead of {size}"),
        ));
    }
    out.write_all(&[0; 3][..pad4(usize::try_from(size).expect("u32 fits"))])?;
    Ok(())
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Create an ext4 disk image of `size` bytes at `path`, populated with the tree at `root`
/// (`mkfs.ext4 -q -F -d ROOT`) if given.
pub fn make_ext4(path: &Path, size: u64, root: Option<&Path>) -> Option<()> {
    let mkfs = require_tool("mkfs.ext4")?;
    let _ = std::fs::remove_file(path);
    File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut cmd = Command::new(mkfs);
    cmd.args(["-q", "-F"]);
    if let Some(root) = root {
        cmd.arg("-d").arg(root);
    }
    crate::run(cmd.arg(path));
    Some(())
}

/// A VM run being set up: kernel, files, script, limits. [`VmRun::run`] boots it.
#[derive(Debug)]
pub struct VmRun {
    name: String,
    kernel: Kernel,
    initramfs: Initramfs,
    disk: Vec<(String, PathBuf)>,
    disk_size: u64,
    script: String,
    boot_timeout: Duration,
    timeout: Duration,
    memory_mib: u32,
    cpus: u32,
    cmdline: String,
    user_net: bool,
}

impl VmRun {
    /// A run named `name` (its scratch directory is `vm-NAME`) on the 6.12 kernel, with a
    /// 256 MiB ext4 disk, 512 MiB of memory, 2 CPUs, [`DEFAULT_BOOT_TIMEOUT`] to boot and a
    /// 240 s timeout for the script.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            kernel: Kernel::V6_12,
            initramfs: Initramfs::new(),
            disk: Vec::new(),
            disk_size: 256 << 20,
            script: String::new(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            timeout: Duration::from_secs(240),
            memory_mib: 512,
            cpus: 2,
            cmdline: String::new(),
            user_net: false,
        }
    }

    /// The kernel to boot.
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Put a host file into the initramfs at `guest_path` (mode 0755: binaries, scripts).
    pub fn file(mut self, guest_path: &str, host: &Path) -> Self {
        self.initramfs.file(guest_path, host, 0o755);
        self
    }

    /// Put a dynamically linked host binary into the initramfs at `guest_path`, with the shared
    /// libraries it needs ([`shared_libraries`]) at their host paths (the guest has no loader or
    /// libc of its own: Debian's `docker-registry`, nydusd).
    pub fn dynamic_binary(mut self, guest_path: &str, host: &Path) -> Self {
        self.initramfs.file(guest_path, host, 0o755);
        for lib in shared_libraries(host) {
            let guest = lib.to_string_lossy().trim_start_matches('/').to_string();
            self.initramfs.file(&guest, &lib, 0o755);
        }
        self
    }

    /// Put bytes into the initramfs at `guest_path` with `mode`.
    pub fn bytes(mut self, guest_path: &str, bytes: &[u8], mode: u32) -> Self {
        self.initramfs.bytes(guest_path, bytes, mode);
        self
    }

    /// Copy a host file or directory tree onto the ext4 disk, at `/data/DISK_PATH` in the guest.
    pub fn disk_file(mut self, disk_path: &str, host: &Path) -> Self {
        let key = Initramfs::key(disk_path);
        self.disk.push((key, host.to_path_buf()));
        self
    }

    /// Size of the ext4 disk (`/dev/vda`, mounted on `/data`).
    pub fn disk_size(mut self, bytes: u64) -> Self {
        self.disk_size = bytes;
        self
    }

    /// The test script (busybox `sh`, sourced in `/vmtest` with the helpers of the module docs).
    pub fn script(mut self, script: &str) -> Self {
        self.script = script.to_string();
        self
    }

    /// The [`Manifests`] of a host tree, for the guest's `verify_tree`.
    pub fn manifests(self, manifests: &Manifests) -> Self {
        self.bytes("vmtest/sums", manifests.sums.as_bytes(), 0o644)
            .bytes("vmtest/stats", manifests.stats.as_bytes(), 0o644)
    }

    /// Kill qemu and fail when the script has run this long, counted from the guest's
    /// `VMTEST BEGIN` line (so a slow boot on a loaded machine does not eat into it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Kill qemu and fail when the guest has not reached its script (`VMTEST BEGIN`) after
    /// this long ([`DEFAULT_BOOT_TIMEOUT`] unless set); [`VmOutcome::booted`] then says so.
    pub fn boot_timeout(mut self, timeout: Duration) -> Self {
        self.boot_timeout = timeout;
        self
    }

    /// Extra kernel command-line arguments (after [`BASE_CMDLINE`]).
    pub fn cmdline(mut self, args: &str) -> Self {
        self.cmdline = args.to_string();
        self
    }

    /// Guest CPUs (default 2).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// Give the guest a network card on qemu's user-mode network (`-netdev user` with a
    /// `virtio-net-pci` device): the guest is `10.0.2.15/24` on `eth0` (configured, with `lo`,
    /// before the script runs: `net-up` fails if that does not work) and reaches the host's
    /// `127.0.0.1:PORT` at [`GUEST_HOST`]`:PORT`, so host servers stay on 127.0.0.1. Off by
    /// default: a VM has no network card.
    pub fn user_net(mut self) -> Self {
        self.user_net = true;
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Boot the VM, wait for it to power off (or the timeout) and parse its results.
    ///
    /// Returns `None` only when qemu, busybox or mkfs.ext4 is missing and
    /// `EROFS_TESTS_ALLOW_SKIP=1` (otherwise that panics, see [`crate::missing`]). Panics if
    /// the VM cannot be set up; a guest that fails is reported by [`VmOutcome`].
    pub fn run(mut self) -> Option<VmOutcome> {
        let qemu = require_tool("qemu-system-x86_64")?;
        let busybox = busybox()?;
        let kernel = self.kernel.image();
        assert!(
            kernel.is_file(),
            "kernel {} missing: run scripts/build-testenv.sh, or set EROFS_SHARED_DIR \
             to a copy of the test environment (see scripts/env.sh)",
            kernel.display()
        );
        let dir = scratch_dir(&format!("vm-{}", self.name));

        // The disk: a tree assembled from the disk files, then mkfs.ext4 -d.
        let tree = dir.join("disk-tree");
        std::fs::create_dir_all(&tree).expect("create disk tree");
        for (path, host) in &self.disk {
            let dst = tree.join(path);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).expect("create disk dir");
            }
            copy_tree(host, &dst).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        }
        let disk = dir.join("disk.ext4");
        make_ext4(&disk, self.disk_size, Some(&tree))?;
        std::fs::remove_dir_all(&tree).expect("remove disk tree");

        let vmtool = guest_tool();
        let script = if self.user_net {
            format!("{GUEST_NET_UP}{}", self.script)
        } else {
            self.script.clone()
        };
        self.initramfs
            .file("bin/busybox", &busybox, 0o755)
            .file("bin/vmtool", &vmtool, 0o755)
            .symlink("bin/sh", "busybox")
            .bytes("init", INIT_SCRIPT.as_bytes(), 0o755)
            .bytes("vmtest/test.sh", script.as_bytes(), 0o644);
        let initrd = dir.join("initrd.cpio");
        self.initramfs
            .write_file(&initrd)
            .unwrap_or_else(|e| panic!("writing {}: {e}", initrd.display()));

        let results = dir.join("results.log");
        let console = dir.join("console.log");
        let mut cmd = Command::new(qemu);
        cmd.args(["-m", &self.memory_mib.to_string()])
            // One socket per CPU: the kernels have no ACPI, and the MP table SeaBIOS writes
            // lists sockets only, so `-smp 2` (two cores in one socket) boots one CPU.
            .arg("-smp")
            .arg(format!("{0},sockets={0}", self.cpus))
            .args(["-nographic", "-no-reboot", "-monitor", "none"])
            .args(["-serial", "stdio"])
            .arg("-serial")
            .arg(format!("file:{}", qemu_escape(&results)))
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", qemu_escape(&disk)))
            .arg("-append")
            .arg(format!("{BASE_CMDLINE} {}", self.cmdline).trim_end())
            .stdin(Stdio::null())
            .stdout(File::create(&console).expect("create console log"))
            .stderr(Stdio::piped());
        // Software emulation by default, as in CI and the README; `EROFS_VM_ACCEL=kvm` opts in
        // to KVM where it works (on some nested hosts qemu aborts setting MSRs).
        if self.user_net {
            cmd.args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]);
        }
        let accel = std::env::var("EROFS_VM_ACCEL").unwrap_or_else(|_| "tcg".to_string());
        cmd.args(["-accel", &accel]);

        let _vm = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // Two deadlines: the boot (until the guest's `VMTEST BEGIN` reaches the results
        // port) and the script (from then on). The results file is small; re-reading it while
        // waiting for the first line costs nothing.
        let mut timed_out = false;
        let mut booted_at: Option<Instant> = None;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for qemu") {
                break Some(status);
            }
            if booted_at.is_none()
                && std::fs::read(&results).is_ok_and(|r| contains(&r, b"VMTEST BEGIN"))
            {
                booted_at = Some(Instant::now());
            }
            let late = match booted_at {
                Some(t) => t.elapsed() > self.timeout,
                None => start.elapsed() > self.boot_timeout,
            };
            if late {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = start.elapsed();
        let qemu_stderr = stderr_reader.join().unwrap_or_default();
        let console_log = std::fs::read(&console).unwrap_or_default();
        let results_log = std::fs::read(&results).unwrap_or_default();
        let mut outcome = VmOutcome::parse(&String::from_utf8_lossy(&results_log));
        outcome.console = String::from_utf8_lossy(&console_log).replace('\r', "");
        outcome.qemu_stderr = qemu_stderr;
        outcome.elapsed = elapsed;
        outcome.timed_out = timed_out;
        outcome.boot_time = booted_at.map(|t| t.duration_since(start));
        outcome.qemu_status = status.map(|s| s.to_string());
        outcome.accel = accel;
        outcome.name = self.name;
        outcome.dir = dir.keep();
        // The disk can be hundreds of MiB; keep it only when asked (the console log, the
        // results and the initramfs stay in the scratch directory).
        if std::env::var_os("EROFS_VM_KEEP").is_none_or(|v| v != "1") {
            let _ = std::fs::remove_file(&disk);
            let _ = std::fs::remove_file(outcome.dir.join("initrd.cpio"));
        }
        Some(outcome)
    }
}

/// The host as a guest of [`VmRun::user_net`] sees it: qemu's user-mode network forwards
/// `10.0.2.2:PORT` to the host's `127.0.0.1:PORT`.
pub const GUEST_HOST: &str = "10.0.2.2";

/// What [`VmRun::user_net`] runs before the script: `lo` and `eth0` up, `10.0.2.15/24`, the
/// host ([`GUEST_HOST`]) as the default route; `net-up` fails if a step does not work.
const GUEST_NET_UP: &str = r#"
if _o=$(ip link set lo up 2>&1 && ip addr add 10.0.2.15/24 dev eth0 2>&1 &&
    ip link set eth0 up 2>&1 && ip route add default via 10.0.2.2 2>&1); then
    pass net-up
else
    fail net-up "$_o"
fi
"#;

/// How long a guest may take to reach its script by default: it boots in about a second on an
/// idle 2-core machine, but CI runs on a loaded one under software emulation.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A path as a qemu option value: a comma is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Copy a file, or a directory tree (files, directories, symlinks), from `src` to `dst`.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        std::fs::set_permissions(dst, meta.permissions())
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
    } else {
        // A hard link when possible: images can be large.
        std::fs::hard_link(src, dst).or_else(|_| std::fs::copy(src, dst).map(drop))
    }
}

/// What a VM run reported.
#[derive(Clone, Debug, Default)]
pub struct VmOutcome {
    /// The run's name.
    pub name: String,
    /// Names of the checks that passed, in order.
    pub passed: Vec<String>,
    /// `(name, why)` of the checks that failed, in order.
    pub failed: Vec<(String, String)>,
    /// `VMTEST DATA key=value` lines, in order (a key may repeat).
    pub data: Vec<(String, String)>,
    /// The exit status of the test script, if it reached its end.
    pub script_rc: Option<i32>,
    /// The first `VMTEST BEGIN` line's details (kernel release, CPUs).
    pub begin: Option<String>,
    /// The serial console (kernel messages and the script's own output).
    pub console: String,
    /// What qemu printed on stderr.
    pub qemu_stderr: String,
    /// qemu's exit status, `None` if it was killed at the timeout.
    pub qemu_status: Option<String>,
    /// Whether a timeout (boot or script) killed qemu.
    pub timed_out: bool,
    /// How long the guest took to reach its script (`VMTEST BEGIN` on the results port);
    /// `None` if it never did.
    pub boot_time: Option<Duration>,
    /// Wall time from starting qemu to its exit.
    pub elapsed: Duration,
    /// The qemu accelerator used (`kvm` or `tcg`).
    pub accel: String,
    /// The run's scratch directory (`console.log`, `results.log`; `initrd.cpio` and
    /// `disk.ext4` too with `EROFS_VM_KEEP=1`).
    pub dir: PathBuf,
}

impl VmOutcome {
    /// Parse the result lines (`VMTEST …`) of a results log; other lines are ignored.
    pub fn parse(log: &str) -> Self {
        let mut out = Self::default();
        for line in log.lines() {
            let line = line.trim_end_matches('\r');
            let Some(rest) = line.find("VMTEST ").map(|i| &line[i + 7..]) else {
                continue;
            };
            let (kind, body) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "PASS" => out.passed.push(body.trim().to_string()),
                "FAIL" => {
                    let (name, why) = body.split_once(':').unwrap_or((body, ""));
                    out.failed
                        .push((name.trim().to_string(), why.trim().to_string()));
                }
                "DATA" => {
                    let (k, v) = body.split_once('=').unwrap_or((body, ""));
                    out.data.push((k.trim().to_string(), v.trim().to_string()));
                }
                "BEGIN" => out.begin = Some(body.to_string()),
                "END" => {
                    out.script_rc = body
                        .strip_prefix("rc=")
                        .and_then(|rc| rc.trim().parse().ok())
                        .or(Some(-1));
                }
                _ => {}
            }
        }
        out
    }

    /// Whether the guest reached its script (its `VMTEST BEGIN` line arrived).
    pub fn booted(&self) -> bool {
        self.begin.is_some()
    }

    /// What stopped the run, in words: "never booted" (killed before the script started),
    /// "hung" (killed while the script ran), or qemu's exit.
    pub fn verdict(&self) -> &'static str {
        match (self.timed_out, self.booted(), self.script_rc) {
            (true, false, _) => "never booted (killed at the boot timeout)",
            (true, true, _) => "hung (killed at the script timeout)",
            (false, false, _) => "qemu exited before the guest's script started",
            (false, true, None) => "the script did not reach its end",
            (false, true, Some(0)) => "ran to its end",
            (false, true, Some(_)) => "the script ended with an error",
        }
    }

    /// Whether the script ran to its end with status 0 and no check failed.
    pub fn ok(&self) -> bool {
        !self.timed_out && self.script_rc == Some(0) && self.failed.is_empty()
    }

    /// The last value of data key `key`.
    pub fn data(&self, key: &str) -> Option<&str> {
        self.data
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of data key `key` as a number; panics with the report if it is missing
    /// or not a number.
    pub fn data_u64(&self, key: &str) -> u64 {
        match self.data(key).map(str::parse) {
            Some(Ok(v)) => v,
            _ => panic!("VM data {key:?} missing or not a number\n{}", self.report()),
        }
    }

    /// Panic with the full report unless the run is [`ok`](Self::ok) and every check in
    /// `expected` passed.
    pub fn assert_passed(&self, expected: &[&str]) -> &Self {
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !self.passed.iter().any(|p| p == e))
            .collect();
        if !self.ok() || !missing.is_empty() {
            panic!(
                "VM run {:?} failed; checks that did not pass: {missing:?}\n{}",
                self.name,
                self.report()
            );
        }
        self
    }

    /// A human-readable report: the verdict, the result lines and the console.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "--- VM run {:?} ({}): {}; accel={} elapsed={:.1?} boot={:.1?} qemu={} \
             timed_out={} script_rc={:?}",
            self.name,
            self.dir.display(),
            self.verdict(),
            self.accel,
            self.elapsed,
            self.boot_time,
            self.qemu_status.as_deref().unwrap_or("killed"),
            self.timed_out,
            self.script_rc
        );
        if let Some(b) = &self.begin {
            let _ = writeln!(s, "begin: {b}");
        }
        for p in &self.passed {
            let _ = writeln!(s, "PASS {p}");
        }
        for (n, why) in &self.failed {
            let _ = writeln!(s, "FAIL {n}: {why}");
        }
        for (k, v) in &self.data {
            let _ = writeln!(s, "DATA {k}={v}");
        }
        if !self.qemu_stderr.trim().is_empty() {
            let _ = writeln!(s, "--- qemu stderr\n{}", self.qemu_stderr.trim_end());
        }
        let _ = writeln!(s, "--- guest console\n{}\n--- end", self.console.trim_end());
        s
    }
}

/// Deterministic incompressible bytes (xorshift64*): repeatable test content with no zero
/// blocks, so an image built from it has no holes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Write a small *dense* tree at `root`: the sizes that matter to block mapping (0, sub-block,
/// block edges, several blocks, over 1 MiB), incompressible and compressible data, nesting, a
/// name with a space, a symlink, an empty directory and a few modes.
///
/// Dense means no holes and no all-zero blocks: the 6.12 kernel zero-fills the rest of a
/// fscache read request after a hole (`../shared/vm/README.md`), so trees read back through
/// the daemon must not have any.
pub fn dense_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let write = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write file");
    };
    for (i, len) in [
        0usize, 1, 100, 4095, 4096, 4097, 65_549, 1_048_583, 3_145_728,
    ]
    .into_iter()
    .enumerate()
    {
        write(&format!("sizes/f{len}"), &noise(i as u64 + 1, len));
    }
    let text: String = (0..60_000)
        .map(|i| format!("line {i} of a compressible text file\n"))
        .collect();
    write("text/big.txt", text.as_bytes());
    write("a/b/c/d/deep file", b"deep\n");
    write(
        "a/b/mixed",
        &[noise(99, 10_000), vec![b'z'; 20_000]].concat(),
    );
    std::os::unix::fs::symlink("../sizes/f100", root.join("a/link")).expect("symlink");
    std::fs::set_permissions(
        root.join("a/b/mixed"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
}

/// The smallest of some timings (the best of alternated rounds: the host is shared).
pub fn best(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The host's load averages (`1 5 15` minutes), for benchmark lines.
pub fn host_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The benchmark tree of `vm_rafs` and `vm_fanotify` figures: "log-like" text (compressible about 3:1 by zstd, so chunks really are
/// decompressed) and some incompressible files: 48 MiB in 1 + 64 files.
pub fn bench_tree(root: &Path) {
    std::fs::create_dir_all(root.join("many")).expect("mkdir");
    let digits = noise(5, 8 << 20);
    let mut text = Vec::with_capacity(33 << 20);
    let mut i = 0usize;
    while text.len() < 32 << 20 {
        let d = &digits[(i * 8) % (digits.len() - 8)..][..8];
        let n = u64::from_le_bytes(d.try_into().expect("8 bytes"));
        text.extend_from_slice(
            format!(
                "2026-11-28T06:{:02}:{:02}.{:06}Z worker-{} request id={:016x} status={} bytes={}\n",
                n % 60,
                (n >> 8) % 60,
                (n >> 16) % 1_000_000,
                (n >> 40) % 16,
                n,
                [200, 200, 200, 404, 500][(n >> 50) as usize % 5],
                (n >> 20) % 100_000
            )
            .as_bytes(),
        );
        i += 1;
    }
    text.truncate(32 << 20);
    std::fs::write(root.join("access.log"), &text).expect("write");
    for k in 0..64u64 {
        let len = 256 * 1024;
        let data = if k % 2 == 0 {
            noise(100 + k, len)
        } else {
            text[(k as usize) * len..][..len].to_vec()
        };
        std::fs::write(root.join(format!("many/f{k:02}")), data).expect("write");
    }
}

/// What the guest's `verify_tree NAME DIR` compares a mount with, made from a host tree by
/// [`manifests`] and put into the initramfs by [`VmRun::manifests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifests {
    /// `sha256sum` lines for every regular file, sorted by path (`/vmtest/sums`).
    pub sums: String,
    /// `stat -c '%n %a %u:%g %F'` lines for every entry, sorted (`/vmtest/stats`).
    pub stats: String,
}

/// The [`Manifests`] of the tree at `tree`, made by the same busybox that runs in the guest so
/// the formats match exactly.
pub fn manifests(busybox: &Path, tree: &Path) -> Manifests {
    let sums = crate::run(Command::new(busybox).current_dir(tree).args([
        "sh",
        "-c",
        "find . -type f -exec sha256sum {} + | sort -k2",
    ]));
    let stats = crate::run(Command::new(busybox).current_dir(tree).args([
        "sh",
        "-c",
        "find . | sort | while IFS= read -r f; do stat -c '%n %a %u:%g %F' \"$f\"; done",
    ]));
    Manifests { sums, stats }
}

/// `nydus-image create -t dir-rafs -v 6 --compressor zstd -D blobs -B blobs/FSID tree`;
/// returns the blob's record (one blob; its `id` names the blob file). A zstd Nydus image for
/// the VM tests of both transports and the nydusd benches.
pub fn nydus_zstd(blobs: &Path, fsid: &str, tree: &Path) -> erofs_reader::nydus::BlobInfo {
    crate::nydus_image::Create::new(tree, blobs)
        .bootstrap(&blobs.join(fsid))
        .args(&["--compressor", "zstd", "--chunk-size", "0x100000"])
        .run()
        .expect("nydus-image");
    let image = erofs_reader::Image::open(blobs.join(fsid)).expect("bootstrap");
    let rafs = erofs_reader::nydus::RafsMeta::from_image(&image)
        .expect("RAFS")
        .expect("RAFS");
    assert_eq!(rafs.blobs().len(), 1, "one blob");
    rafs.blobs()[0].clone()
}

/// Write `tag` into device slot `slot` (0-based) of the EROFS image at `image` and refresh
/// the superblock checksum when the image has one (`COMPAT_SB_CHKSUM`).
///
/// `mkfs.erofs --blobdev` leaves device tags empty, and the kernel's fscache mode refuses an
/// empty tag (`kernel-abi.md` §1.6): the tag is the cookie key of the blob's OPEN, so with
/// `erofs-ondemand` it names the blob's file in the blob directory.
///
/// The image must already be valid ([`SuperBlock::parse`], checksum included), so a broken
/// image is never "fixed" by a fresh checksum.
///
/// [`SuperBlock::parse`]: erofs_format::superblock::SuperBlock::parse
pub fn set_device_tag(image: &Path, slot: u16, tag: &str) -> io::Result<()> {
    use erofs_format::checksum::write_superblock_checksum;
    use erofs_format::device::{DEVICE_SLOT_SIZE, DeviceSlot};
    use erofs_format::superblock::{FeatureCompat, SuperBlock};
    use zerocopy::{FromBytes, IntoBytes};

    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    if tag.is_empty() || tag.len() > 64 || tag.bytes().any(|b| b == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("device tag {tag:?} must be 1..=64 bytes without NUL"),
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    // Block 0 holds the superblock and everything its checksum covers (blocks <= 4 KiB).
    let mut head = Vec::new();
    (&mut f).take(4096).read_to_end(&mut head)?;
    let sb = SuperBlock::parse(&head).map_err(|e| invalid(format!("{}: {e}", image.display())))?;
    let count = sb.extra_devices();
    if slot >= count {
        return Err(invalid(format!(
            "{}: no device slot {slot} ({count} extra devices)",
            image.display()
        )));
    }
    let has_checksum = sb.compat().contains(FeatureCompat::SB_CHKSUM);
    let slot_off = sb.device_table_offset() + u64::from(slot) * DEVICE_SLOT_SIZE as u64;

    let mut raw = [0u8; DEVICE_SLOT_SIZE];
    f.seek(SeekFrom::Start(slot_off))?;
    f.read_exact(&mut raw)?;
    let mut device =
        DeviceSlot::read_from_bytes(&raw).map_err(|_| invalid("device slot size".to_string()))?;
    device.tag = [0; 64];
    device.tag[..tag.len()].copy_from_slice(tag.as_bytes());
    f.seek(SeekFrom::Start(slot_off))?;
    f.write_all(device.as_bytes())?;

    if has_checksum {
        // The covered range may include the slot just written (mkfs.erofs puts the table in
        // block 0): patch the copy of block 0 the same way, then recompute.
        let start = usize::try_from(slot_off).unwrap_or(usize::MAX);
        if let Some(dst) = head.get_mut(start..start.saturating_add(DEVICE_SLOT_SIZE)) {
            dst.copy_from_slice(device.as_bytes());
        }
        let sum = write_superblock_checksum(&mut head)
            .map_err(|e| invalid(format!("{}: {e}", image.display())))?;
        f.seek(SeekFrom::Start(erofs_format::SUPERBLOCK_OFFSET + 4))?;
        f.write_all(&sum.to_le_bytes())?;
    }
    f.sync_all()
}

/// The guest shell functions every daemon test script starts with (after `init.sh`'s `pass`,
/// `fail`, `check`): `B` (the blob dir on the ext4 disk), `await_daemon NAME WHAT POLLS CMD...`,
/// `start_daemon LOG TAG ARGS...`,
/// `stop_daemon NAME`, `od_mount FSID DIR [OPTIONS]`, `summary LOG`, `reads_of FSID/KEY LOG`,
/// `drop_caches`, `field KEY LINE`, `read_tree KEY DIR`. A macro so that test files can `concat!` more onto it.
#[macro_export]
macro_rules! daemon_prelude {
    () => {
        r#"B=/data/blobs
DPID=
DLOG=
# await_daemon NAME WHAT POLLS CMD...: poll CMD every 50 ms while the daemon DPID lives;
# NAME passes once CMD succeeds, fails (with the log DLOG) after POLLS polls or if the daemon
# died.
await_daemon() {
    _name=$1
    _what=$2
    _max=$3
    shift 3
    _i=0
    while ! "$@"; do
        _i=$((_i + 1))
        if [ $_i -gt $_max ] || ! kill -0 $DPID 2>/dev/null; then
            fail "$_name" "$_what after $_i polls: $(cat "$DLOG")"
            return 1
        fi
        sleep 0.05
    done
    pass "$_name"
}
# start_daemon LOG TAG ARGS...: start erofs-ondemand with cache tag TAG in the background and
# wait until /proc/fs/fscache/caches shows that cache active (bound).
start_daemon() {
    DLOG=$1
    _tag=$2
    shift 2
    erofs-ondemand serve --blob-dir $B --tag "$_tag" "$@" >"$DLOG" 2>&1 &
    DPID=$!
    await_daemon "daemon-$_tag" "cache not bound" 400 grep -q " A $_tag\$" /proc/fs/fscache/caches
}
# stop_daemon NAME: SIGTERM, wait; NAME passes if the daemon exits 0.
stop_daemon() {
    kill -TERM $DPID
    wait $DPID
    _rc=$?
    if [ $_rc -eq 0 ]; then
        pass "$1"
    else
        fail "$1" "daemon exited with status $_rc: $(tail -5 "$DLOG")"
    fi
    echo "--- daemon log $DLOG"
    cat "$DLOG"
    echo "---"
}
# ready_line FIFO SECONDS: the first line a daemon writes on its readiness fd (`--ready-fd`,
# FIFO its write end), or nothing if it closed the fd without one (it failed first) or
# SECONDS passed. The FIFO is opened by `head`, not by this shell: the shell's own open of a
# FIFO is not restarted after a signal (busybox ash; a background job's SIGCHLD made
# `read <FIFO` fail with EINTR while the daemon was still starting).
ready_line() {
    timeout -s KILL "$2" head -n 1 "$1" 2>/dev/null
}
# od_mount FSID DIR [OPTIONS]: an EROFS-over-fscache mount (check mount-FSID). The kernel waits
# for the daemon's copen without limit, so give up (SIGKILL) after 60 s.
od_mount() {
    mkdir -p "$2"
    _opts="fsid=$1"
    [ -n "$3" ] && _opts="$_opts,$3"
    check "mount-$1" timeout -s KILL 60 mount -t erofs none -o "$_opts" "$2"
}
# summary LOG: the daemon's exit line, `erofs-ondemand: opens=N reads=N closes=N ...`.
summary() { grep "^erofs-ondemand: opens=" "$1"; }
# reads_of FSID/KEY LOG: READ requests logged (RUST_LOG=debug) for the object of cookie key
# KEY in volume `erofs,FSID`, from the `OPEN object ID (erofs,FSID/KEY): size N` and
# `READ msg M object ID [...]` lines.
reads_of() {
    _id=$(sed -n "s|.*OPEN object \\([0-9]*\\) (erofs,$1).*|\\1|p" "$2" | tail -1)
    if [ -z "$_id" ]; then
        echo 0
    else
        grep -c "READ msg [0-9]* object $_id " "$2"
    fi
}
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# field KEY LINE: the value of KEY=N in a summary line.
field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# read_tree KEY DIR: read every file under DIR once (sorted, timed by vmtool), DATA KEY_ns
# and KEY_bytes.
read_tree() {
    _out=$(cd "$2" && vmtool read $(find . -type f | sort))
    case $_out in
    bytes=*ns=*)
        _b=${_out#bytes=}
        data "$1_bytes" "${_b%% *}"
        data "$1_ns" "${_out##*ns=}"
        ;;
    *) fail "$1" "$_out" ;;
    esac
}
"#
    };
}

/// [`daemon_prelude!`] as a constant.
pub const DAEMON_PRELUDE: &str = daemon_prelude!();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_results() {
        let log = "noise\r\nVMTEST BEGIN kernel=6.12 cpus=2\nVMTEST PASS a\n[  1.0] VMTEST FAIL b: it broke: badly\nVMTEST DATA reads=12\nVMTEST DATA reads=13\nVMTEST END rc=0\n";
        let out = VmOutcome::parse(log);
        assert_eq!(out.passed, ["a"]);
        assert_eq!(
            out.failed,
            [("b".to_string(), "it broke: badly".to_string())]
        );
        assert_eq!(out.data("reads"), Some("13"));
        assert_eq!(out.script_rc, Some(0));
        assert!(!out.ok());
        let good = VmOutcome::parse("VMTEST PASS a\nVMTEST END rc=0\n");
        assert!(good.ok());
        assert!(!VmOutcome::parse("VMTEST PASS a\n").ok(), "no END line");
        assert!(!VmOutcome::parse("VMTEST END rc=3\n").ok());
    }

    #[test]
    fn device_tag_is_written_and_checksum_fixed() {
        let (Some(mkfs), Some(fsck)) = (require_tool("mkfs.erofs"), require_tool("fsck.erofs"))
        else {
            return;
        };
        let dir = scratch_dir("vm-device-tag");
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).expect("mkdir");
        std::fs::write(tree.join("f"), noise(7, 300_000)).expect("write");
        let (boot, blob) = (dir.join("boot"), dir.join("blob"));
        crate::run(
            Command::new(mkfs)
                .arg("--chunksize=65536")
                .arg(format!("--blobdev={}", blob.display()))
                .arg(&boot)
                .arg(&tree),
        );
        let before = std::fs::read(&boot).expect("read image");
        set_device_tag(&boot, 0, "blob-0123").expect("set tag");
        let after = std::fs::read(&boot).expect("read image");
        // The slot sits at devt_slotoff * 128; only the tag and the checksum changed.
        let slot = usize::from(u16::from_le_bytes([after[1024 + 88], after[1024 + 89]])) * 128;
        assert_eq!(&after[slot..slot + 9], b"blob-0123");
        assert!(after[slot + 9..slot + 64].iter().all(|&b| b == 0));
        let changed: Vec<usize> = (0..after.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(
            changed
                .iter()
                .all(|&i| (slot..slot + 9).contains(&i) || (1028..1032).contains(&i)),
            "{changed:?}"
        );
        // erofs-utils checks the checksum independently. It exits 0 even when the checksum is
        // wrong, so its stderr is checked too.
        let out = Command::new(&fsck)
            .arg(format!("--device={}", blob.display()))
            .arg(&boot)
            .output()
            .expect("run fsck.erofs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("<E>"), "{stderr}");
        // And it does notice a tag written without fixing the checksum.
        let mut bad = after.clone();
        bad[slot] = b'X';
        std::fs::write(dir.join("bad"), &bad).expect("write");
        let out = Command::new(&fsck)
            .arg(format!("--device={}", blob.display()))
            .arg(dir.join("bad"))
            .output()
            .expect("run fsck.erofs");
        assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));

        assert!(set_device_tag(&boot, 1, "x").is_err(), "one device only");
        assert!(set_device_tag(&boot, 0, "").is_err());
        assert!(set_device_tag(&boot, 0, &"x".repeat(65)).is_err());
    }

    #[test]
    fn newc_layout() {
        let mut ramfs = Initramfs::new();
        ramfs.bytes("a/b", b"hello", 0o644).symlink("c", "a/b");
        let mut buf = Vec::new();
        ramfs.write_to(&mut buf).expect("write to a Vec");
        assert_eq!(buf.len() % 4, 0);
        let text = String::from_utf8_lossy(&buf);
        // Parents first: "a" then "a/b" then "c", then the trailer.
        let order: Vec<usize> = ["a\0", "a/b\0", "hello", "c\0", "TRAILER!!!\0"]
            .iter()
            .map(|s| text.find(s).expect("entry present"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(text.starts_with("070701"));
    }

    #[test]
    fn newc_is_read_by_cpio() {
        let Some(cpio) = require_tool("cpio") else {
            return;
        };
        let dir = scratch_dir("vm-newc");
        let mut ramfs = Initramfs::new();
        ramfs
            .bytes("bin/x", b"#!/bin/sh\n", 0o755)
            .symlink("bin/sh", "busybox")
            .dir("empty");
        let archive = dir.join("a.cpio");
        ramfs.write_file(&archive).expect("write archive");
        let out = crate::run(
            Command::new(cpio)
                .args(["-t", "-v", "--quiet", "-F"])
                .arg(&archive),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("bin/x")),
            "{out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with('l') && l.ends_with("bin/sh -> busybox")),
            "{out}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with('d') && l.ends_with("empty")),
            "{out}"
        );
    }
}
