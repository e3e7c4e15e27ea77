//! A Debian root filesystem built from Debian packages, for benchmarks that start a real
//! program from an image (`benches/container_start.rs`).
//!
//! [`DebianRootfs::build`] resolves the dependency closure of some root packages from the
//! host's apt lists ([`closure`] over `apt-cache show` stanzas parsed by [`parse_stanzas`]),
//! downloads each package once with `apt-get download` into a cache directory under
//! `target/`, and unpacks each with `dpkg-deb -x` into a fresh tree. No maintainer script
//! runs (nothing is configured) but one step of Python's: when the tree has
//! `/usr/bin/python3`, its own interpreter compiles the bytecode (`__pycache__/*.pyc`) of
//! `/usr/lib/python3*` in a chroot, as the packages' `py3compile` postinst does on a Debian
//! system (without it every start compiles each module it imports, from a read-only image
//! every time). The tree is "merged /usr" as Debian's is (`/bin`, `/sbin`,
//! `/lib`, `/lib64` are links into `/usr`). The result is cached too: a second build with
//! the same package list reuses the tree.
//!
//! The resolver is deliberately small: `Depends` and `Pre-Depends` only (no Recommends), the
//! first alternative of a group that apt knows (a real package, else the first package that
//! `Provides` it), versions ignored (the host's apt lists have one candidate per package).
//!
//! ```no_run
//! let Some(root) = tests::rootfs::DebianRootfs::build(&["python3"]) else { return };
//! assert!(root.dir.join("usr/bin/python3").exists());
//! println!("{} packages, {} bytes", root.packages.len(), root.bytes);
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// What the resolver needs of one package (one stanza of `apt-cache show`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    /// `Package:`.
    pub name: String,
    /// `Version:`.
    pub version: String,
    /// `Pre-Depends:` then `Depends:`: groups of alternatives, names only (no versions, no
    /// architecture qualifiers).
    pub depends: Vec<Vec<String>>,
    /// `Provides:` (virtual names, without versions).
    pub provides: Vec<String>,
    /// `Installed-Size:` in KiB.
    pub installed_kib: u64,
    /// `Priority:` (`required`, `important`, `standard`, `optional`, `extra`).
    pub priority: String,
}

impl Package {
    /// Lower is preferred: apt's order of priorities, unknown last.
    fn priority_rank(&self) -> usize {
        ["required", "important", "standard", "optional", "extra"]
            .iter()
            .position(|p| *p == self.priority)
            .unwrap_or(5)
    }
}

/// Parse `apt-cache show` output (RFC 822 stanzas separated by blank lines). Continuation
/// lines (a leading space) belong to the field above; fields other than those of
/// [`Package`] are ignored; a stanza without `Package:` is skipped.
pub fn parse_stanzas(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = fields.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let Some(name) = get("Package") else {
            continue;
        };
        let mut depends = relation(get("Pre-Depends").unwrap_or(""));
        depends.extend(relation(get("Depends").unwrap_or("")));
        let provides = relation(get("Provides").unwrap_or(""))
            .into_iter()
            .flatten()
            .collect();
        out.push(Package {
            name: name.to_string(),
            version: get("Version").unwrap_or("").to_string(),
            depends,
            provides,
            installed_kib: get("Installed-Size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            priority: get("Priority").unwrap_or("").to_string(),
        });
    }
    out
}

/// A relation field (`a (>= 1) | b:any, c`) as groups of bare names.
fn relation(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split(['(', '[', '<']).next()?.trim();
                    let name = name.split(':').next()?.trim();
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// Where [`closure`] learns about packages.
pub trait PackageSource {
    /// The package called `name`, if apt has one (not a purely virtual name).
    fn package(&mut self, name: &str) -> Option<Package>;
    /// The real packages that provide the virtual `name`.
    fn providers(&mut self, name: &str) -> Vec<String>;
    /// Look up `names` at once ahead of [`PackageSource::package`] calls (a hint: each
    /// `apt-cache` run reads all of apt's lists).
    fn prefetch(&mut self, names: &[String]) {
        let _ = names;
    }
}

/// The dependency closure of `roots`, sorted by name: every root and, for each dependency
/// group of a package in the closure, the first alternative that resolves (a package
/// already chosen wins over any other alternative; a virtual name resolves to its provider
/// of the highest priority, then the first by name). Fails with the unresolved group.
pub fn closure(roots: &[&str], source: &mut dyn PackageSource) -> Result<Vec<Package>, String> {
    let mut chosen: BTreeMap<String, Package> = BTreeMap::new();
    let mut provided: BTreeMap<String, String> = BTreeMap::new();
    // Unresolved groups (who needs it, alternatives), breadth first: a whole level of the
    // graph is looked up at once (`PackageSource::prefetch`).
    let mut queue: VecDeque<(String, Vec<String>)> = roots
        .iter()
        .map(|r| (String::new(), vec![r.to_string()]))
        .collect();
    while let Some((needed_by, group)) = queue.pop_front() {
        if group
            .iter()
            .any(|a| chosen.contains_key(a) || provided.contains_key(a))
        {
            continue;
        }
        let mut names: Vec<String> = group.clone();
        names.extend(queue.iter().flat_map(|(_, g)| g.iter().cloned()));
        source.prefetch(&names);
        let pick = group.iter().find_map(|alt| {
            if source.package(alt).is_some() {
                return Some(alt.clone());
            }
            let names = source.providers(alt);
            source.prefetch(&names);
            let mut providers: Vec<Package> =
                names.iter().filter_map(|p| source.package(p)).collect();
            providers
                .sort_by(|a, b| (a.priority_rank(), &a.name).cmp(&(b.priority_rank(), &b.name)));
            providers.into_iter().next().map(|p| p.name)
        });
        let Some(pkg) = pick.and_then(|p| source.package(&p)) else {
            return Err(if needed_by.is_empty() {
                format!("no package {}", group.join(" | "))
            } else {
                format!("{needed_by}: no package satisfies {}", group.join(" | "))
            });
        };
        if chosen.contains_key(&pkg.name) {
            continue;
        }
        for g in &pkg.depends {
            queue.push_back((pkg.name.clone(), g.clone()));
        }
        for v in &pkg.provides {
            provided
                .entry(v.clone())
                .or_insert_with(|| pkg.name.clone());
        }
        chosen.insert(pkg.name.clone(), pkg);
    }
    Ok(chosen.into_values().collect())
}

/// [`PackageSource`] over the host's apt lists (`apt-cache show --no-all-versions`,
/// `apt-cache showpkg`), with a memo.
#[derive(Debug, Default)]
pub struct AptCache {
    known: BTreeMap<String, Option<Package>>,
}

impl PackageSource for AptCache {
    fn package(&mut self, name: &str) -> Option<Package> {
        self.prefetch(&[name.to_string()]);
        self.known.get(name).cloned().flatten()
    }

    fn prefetch(&mut self, names: &[String]) {
        let mut unknown: Vec<&String> = names
            .iter()
            .filter(|n| !self.known.contains_key(n.as_str()))
            .collect();
        unknown.sort();
        unknown.dedup();
        if unknown.is_empty() {
            return;
        }
        // Names apt does not know (virtual ones) print nothing; apt-cache still exits 0
        // when one of them is real.
        let out = Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(&unknown)
            .output();
        let found = out
            .map(|o| parse_stanzas(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default();
        for n in unknown {
            let pkg = found.iter().find(|p| &p.name == n).cloned();
            self.known.insert(n.clone(), pkg);
        }
    }

    fn providers(&mut self, name: &str) -> Vec<String> {
        let Ok(out) = Command::new("apt-cache").args(["showpkg", name]).output() else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        // `Reverse Provides: ` then one `NAME VERSION` line per provider.
        text.split_once("Reverse Provides:")
            .map(|(_, rest)| {
                rest.lines()
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A rootfs unpacked from Debian packages.
#[derive(Debug, Clone)]
pub struct DebianRootfs {
    /// The tree (owned by root, as `dpkg-deb -x` as root leaves it).
    pub dir: PathBuf,
    /// The packages unpacked, `NAME=VERSION`, sorted.
    pub packages: Vec<String>,
    /// Bytes of regular-file data in the tree.
    pub bytes: u64,
}

/// The cache of downloaded packages and built trees: `target/debian-rootfs`.
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target/debian-rootfs")
}

impl DebianRootfs {
    /// Resolve, download (cached) and unpack the closure of `roots` under [`cache_dir`].
    /// `None` only when a tool is missing and skipping is allowed; a download or unpack
    /// failure panics with the tool's output.
    pub fn build(roots: &[&str]) -> Option<DebianRootfs> {
        Self::build_in(&cache_dir(), roots)
    }

    /// [`DebianRootfs::build`] with the cache in `cache` (`debs/`, one `tree-*`).
    pub fn build_in(cache: &Path, roots: &[&str]) -> Option<DebianRootfs> {
        crate::require_package_tool("apt-get", "apt")?;
        crate::require_package_tool("dpkg-deb", "dpkg")?;
        let pkgs = closure(roots, &mut AptCache::default()).unwrap_or_else(|e| panic!("{e}"));
        let debs = cache.join("debs");
        std::fs::create_dir_all(&debs).expect("create the package cache");
        let packages: Vec<String> = pkgs
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect();
        let files = download(&debs, &pkgs);
        // The tree's name is a digest of the package list (and of how it is built: trees
        // from before the bytecode step are rebuilt): a new list builds a new tree.
        let id = crate::oci_layout::sha256_digest(
            format!("{}\n{BUILD_STEPS}", packages.join("\n")).as_bytes(),
        );
        let dir = cache.join(format!("tree-{}", &id[7..19]));
        let done = dir.with_extension("done");
        if !done.exists() {
            // One tree at a time: a tree of another package list goes (they are big).
            for e in std::fs::read_dir(cache).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with("tree-") {
                    let p = e.path();
                    let _ = std::fs::remove_file(p.with_extension("done"));
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the rootfs");
            for f in &files {
                crate::run(Command::new("dpkg-deb").arg("-x").arg(f).arg(&dir));
            }
            merge_usr(&dir);
            compile_python(&dir);
            std::fs::write(&done, packages.join("\n")).expect("write the marker");
        }
        let bytes = tree_bytes(&dir);
        Some(DebianRootfs {
            dir,
            packages,
            bytes,
        })
    }
}

/// What a tree's build does after unpacking, part of its name.
const BUILD_STEPS: &str = "merge-usr compile-python";

/// Compile the bytecode of the tree's Python library with the tree's own interpreter (the
/// `.pyc` must match its version), in a chroot (root), as `py3compile` does at install:
/// `__pycache__/*.cpython-3X.pyc`, timestamp-checked. Nothing when the tree has no python3.
fn compile_python(root: &Path) {
    if !root.join("usr/bin/python3").exists() {
        return;
    }
    let libs: Vec<String> = std::fs::read_dir(root.join("usr/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("python3"))
        .map(|n| format!("/usr/lib/{n}"))
        .collect();
    crate::run(
        Command::new("chroot")
            .arg(root)
            .args(["/usr/bin/python3", "-E", "-m", "compileall", "-q"])
            .args(&libs),
    );
}

/// The `.deb` files of `pkgs` in `debs`, fetched by one `apt-get download NAME=VERSION...`
/// for those not there yet.
fn download(debs: &Path, pkgs: &[Package]) -> Vec<PathBuf> {
    // apt names the file NAME_VERSION_ARCH.deb with the epoch's ':' as "%3a".
    let prefix = |p: &Package| format!("{}_{}_", p.name, p.version.replace(':', "%3a"));
    let find = |p: &Package| {
        let prefix = prefix(p);
        std::fs::read_dir(debs).ok()?.find_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().into_string().ok()?;
            (n.starts_with(&prefix) && n.ends_with(".deb")).then(|| e.path())
        })
    };
    let missing: Vec<String> = pkgs
        .iter()
        .filter(|p| find(p).is_none())
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    if !missing.is_empty() {
        crate::run(
            Command::new("apt-get")
                .current_dir(debs)
                .args(["download", "-q"])
                .args(&missing),
        );
    }
    pkgs.iter()
        .map(|p| {
            find(p)
                .unwrap_or_else(|| panic!("apt-get download {} left no {}*.deb", p.name, prefix(p)))
        })
        .collect()
}

/// Make `/bin`, `/sbin`, `/lib`, `/lib64` links into `/usr` as on a merged-/usr system,
/// moving what packages put in the real directories into `/usr` first.
fn merge_usr(root: &Path) {
    for d in ["bin", "sbin", "lib", "lib64"] {
        let top = root.join(d);
        let usr = root.join("usr").join(d);
        std::fs::create_dir_all(&usr).expect("mkdir usr/*");
        if let Ok(m) = std::fs::symlink_metadata(&top) {
            if m.file_type().is_symlink() {
                continue;
            }
            crate::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", top.display()))
                    .arg(&usr),
            );
            std::fs::remove_dir_all(&top).expect("remove the unmerged dir");
        }
        std::os::unix::fs::symlink(format!("usr/{d}"), &top).expect("symlink");
    }
}

/// Bytes of regular-file data under `dir` (symlinks not followed).
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            total += tree_bytes(&e.path());
        } else if m.is_file() {
            total += m.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: app\nVersion: 1:2.0-1\nInstalled-Size: 10\n\
        Pre-Depends: libc6 (>= 2.34)\nDepends: liba | libb, mail-transport-agent,\n libc6:any\n\
        Description: x\n more\n\n\
        Package: liba\nVersion: 1\nDepends: libc6\nInstalled-Size: 5\n\n\
        Package: libb\nVersion: 1\n\n\
        Package: libc6\nVersion: 2.36\nProvides: libc6-any (= 2.36)\nInstalled-Size: 100\n\n\
        Package: exim\nVersion: 4\nPriority: optional\nProvides: mail-transport-agent\n\n\
        Package: postfix\nVersion: 3\nPriority: standard\nProvides: mail-transport-agent\n\n\
        Package: zmailer\nVersion: 3\nPriority: standard\nProvides: mail-transport-agent\n";

    struct Fake(Vec<Package>);

    impl PackageSource for Fake {
        fn package(&mut self, name: &str) -> Option<Package> {
            self.0.iter().find(|p| p.name == name).cloned()
        }
        fn providers(&mut self, name: &str) -> Vec<String> {
            self.0
                .iter()
                .filter(|p| p.provides.iter().any(|v| v == name))
                .map(|p| p.name.clone())
                .collect()
        }
    }

    #[test]
    fn stanzas_and_relations() {
        let p = parse_stanzas(SHOW);
        assert_eq!(p.len(), 7);
        assert_eq!(p[5].priority, "standard");
        assert_eq!(p[0].name, "app");
        assert_eq!(p[0].version, "1:2.0-1");
        assert_eq!(p[0].installed_kib, 10);
        assert_eq!(
            p[0].depends,
            [
                vec!["libc6"],
                vec!["liba", "libb"],
                vec!["mail-transport-agent"],
                vec!["libc6"]
            ]
        );
        assert_eq!(p[3].provides, ["libc6-any"]);
    }

    #[test]
    fn closure_takes_first_alternatives_and_providers() {
        let mut src = Fake(parse_stanzas(SHOW));
        let names: Vec<String> = closure(&["app"], &mut src)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        // liba (first alternative), not libb; postfix (the provider of the highest
        // priority, then by name), not exim or zmailer.
        assert_eq!(names, ["app", "liba", "libc6", "postfix"]);
        // A package already in the closure satisfies a group before the first alternative.
        let mut src = Fake(parse_stanzas(SHOW));
        let names: Vec<String> = closure(&["libb", "app"], &mut src)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["app", "libb", "libc6", "postfix"]);
    }

    #[test]
    fn closure_names_what_is_missing() {
        let mut src = Fake(parse_stanzas("Package: a\nDepends: nowhere | gone\n"));
        let e = closure(&["a"], &mut src).unwrap_err();
        assert!(e.contains("nowhere | gone"), "{e}");
        assert!(closure(&["zz"], &mut src).is_err());
    }
}
