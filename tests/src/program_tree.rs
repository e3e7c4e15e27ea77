//! A tree holding a real dynamically linked program and the closure of its libraries (the
//! host's `ls` and what it needs), laid out as Debian's merged /usr: `lib -> usr/lib`,
//! `lib64 -> usr/lib64` with the dynamic loader linked there (the program's `PT_INTERP`),
//! libc reached through a symlink. For cold prediction's ELF and entrypoint rules.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ondemand::predict::elf;

/// Where the libraries are, under the tree's root.
pub const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

/// The host's file for library `name` (in the loader's default directories).
pub fn host_library(name: &[u8]) -> PathBuf {
    let name = std::str::from_utf8(name).unwrap();
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name}: not on this host");
}

/// Write `bin/prog` (the host's `ls`, executable) and the closure of its libraries in
/// [`LIBDIR`] under `src` (libc as `libc-real.so` and a `libc.so.6` symlink to it); returns
/// the libraries' names.
pub fn write(src: &Path) -> Vec<String> {
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join(LIBDIR)).unwrap();
    std::os::unix::fs::symlink("usr/lib", src.join("lib")).unwrap();
    let ls = std::fs::read("/bin/ls").unwrap();
    std::fs::write(src.join("bin/prog"), &ls).unwrap();
    std::fs::set_permissions(src.join("bin/prog"), PermissionsExt::from_mode(0o755)).unwrap();
    let mut todo = elf::needed(&ls).unwrap().libraries;
    let mut names = Vec::new();
    while let Some(name) = todo.pop() {
        let name_s = String::from_utf8(name.clone()).unwrap();
        if names.contains(&name_s) {
            continue;
        }
        let bytes = std::fs::read(host_library(&name)).unwrap();
        todo.extend(elf::needed(&bytes).unwrap().libraries);
        if name_s == "libc.so.6" {
            std::fs::write(src.join(LIBDIR).join("libc-real.so"), &bytes).unwrap();
            std::os::unix::fs::symlink("libc-real.so", src.join(LIBDIR).join("libc.so.6")).unwrap();
        } else {
            std::fs::write(src.join(LIBDIR).join(&name_s), &bytes).unwrap();
        }
        names.push(name_s);
    }
    // Debian's `/lib64/ld-linux-x86-64.so.2` (the program's PT_INTERP), through two links.
    std::fs::create_dir_all(src.join("usr/lib64")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", src.join("lib64")).unwrap();
    std::os::unix::fs::symlink(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        src.join("usr/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    names
}
