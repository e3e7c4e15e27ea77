//! Debian's `docker-registry` (CNCF distribution 2.8) started by a test on 127.0.0.1, on a
//! free port, with its own storage directory; killed on drop.
//!
//! Three set-ups ([`Registry::plain`], [`Registry::basic_tls`], [`Registry::token`], or
//! [`Registry::start`] with [`RegistryOptions`]):
//!
//! - plain HTTP, anonymous push and pull;
//! - `auth: htpasswd` (Basic, bcrypt) over TLS with a CA made for the test ([`TestCa`]);
//! - `auth: token` with the [`TokenServer`] fixture as its realm (TLS optional).
//!
//! The registry's own access log (Apache combined format, one line per request, with the
//! status and the body bytes it wrote) is parsed by [`Registry::access_log`], so a test can
//! count requests and bytes *at the registry*, not in the client under test.
//!
//! ```no_run
//! let reg = tests::registry::Registry::plain("example/registry").unwrap();
//! let r = tests::http::get(&format!("{}/v2/", reg.url()), &[]).unwrap();
//! assert_eq!(r.status, 200);
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TestCa;
use crate::token_server::{self, TokenOptions, TokenServer};

/// How long a registry may take to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Default user and password of the authenticated set-ups.
pub const USER: &str = "erofs";
/// See [`USER`].
pub const PASSWORD: &str = "lazy-pull";

/// The registry's authentication.
#[derive(Debug, Clone)]
pub enum Auth {
    /// None: anyone may push and pull.
    Anonymous,
    /// `auth: htpasswd` with one user (bcrypt). Basic is only safe over TLS; the fixture
    /// does not force TLS but [`Registry::basic_tls`] sets it.
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `auth: token` with a [`TokenServer`] started for the registry.
    Token(TokenOptions),
}

/// A registry set-up.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a test CA ([`Registry::ca`]).
    pub tls: bool,
    /// Authentication.
    pub auth: Auth,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Response status.
    pub status: u16,
    /// Body bytes the registry wrote.
    pub bytes: u64,
}

impl AccessEntry {
    /// The digest when this is a blob request (`/v2/REPO/blobs/DIGEST`).
    pub fn blob(&self) -> Option<&str> {
        let path = self.target.split('?').next()?;
        let (_, d) = path.rsplit_once("/blobs/")?;
        d.starts_with("sha256:").then_some(d)
    }
}

/// A running registry; killed (and its token server stopped) on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: PathBuf,
    /// Removes `dir` once the registry is stopped (after a test that went well).
    scratch: Option<crate::Scratch>,
    addr: SocketAddr,
    opts: RegistryOptions,
    ca: Option<TestCa>,
    token: Option<TokenServer>,
}

/// A free port on 127.0.0.1 (bound and released: a race with other processes is possible,
/// so [`Registry::start`] retries a start that fails to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Registry {
    /// Plain HTTP, anonymous. `name` names the scratch directory (see [`crate::scratch_dir`]).
    pub fn plain(name: &str) -> Option<Registry> {
        Self::start(
            name,
            RegistryOptions {
                tls: false,
                auth: Auth::Anonymous,
            },
        )
    }

    /// HTTPS with a test CA, `auth: htpasswd` with [`USER`] / [`PASSWORD`].
    pub fn basic_tls(name: &str) -> Option<Registry> {
        Self::start(
            name,
            RegistryOptions {
                tls: true,
                auth: Auth::Htpasswd {
                    user: USER.into(),
                    password: PASSWORD.into(),
                },
            },
        )
    }

    /// Plain HTTP, `auth: token` with a token server that knows [`USER`] / [`PASSWORD`]
    /// ([`TokenOptions::default`]: no anonymous pull, 300 s tokens).
    pub fn token(name: &str) -> Option<Registry> {
        Self::start(
            name,
            RegistryOptions {
                tls: false,
                auth: Auth::Token(TokenOptions::default()),
            },
        )
    }

    /// Start a registry as `opts` says and wait until it answers (up to 90 s). `None` only
    /// when a tool is missing and skipping is allowed; any other failure panics with the
    /// registry's log.
    pub fn start(name: &str, opts: RegistryOptions) -> Option<Registry> {
        let bin = crate::require_package_tool("docker-registry", "docker-registry")?;
        let dir = crate::scratch_dir(name);
        let ca = if opts.tls {
            Some(TestCa::new(&dir.join("tls"))?)
        } else {
            None
        };
        let token = match &opts.auth {
            Auth::Token(t) => Some(TokenServer::start(&dir.join("token"), t.clone())?),
            _ => None,
        };
        if let Auth::Htpasswd { user, password } = &opts.auth {
            // The minimum bcrypt cost: the registry checks every request's password.
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
        }
        let mut last_log = String::new();
        for _attempt in 0..4 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                config_yaml(&dir, addr, &opts, ca.as_ref(), token.as_ref()),
            )
            .unwrap();
            let log = dir.join("registry.log");
            let out = std::fs::File::create(&log).unwrap();
            let child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut reg = Registry {
                child,
                dir: dir.to_path_buf(),
                scratch: None,
                addr,
                opts: opts.clone(),
                ca: ca.clone(),
                token: None,
            };
            match reg.wait_ready() {
                Ok(()) => {
                    reg.token = token;
                    reg.scratch = Some(dir);
                    return Some(reg);
                }
                Err(log) if log.contains("address already in use") => {
                    last_log = log;
                    continue;
                }
                Err(log) => panic!("docker-registry did not start:\n{log}"),
            }
        }
        panic!("docker-registry could not bind a free port:\n{last_log}");
    }

    /// Wait for "listening on" in the log and a TCP connect; for plain HTTP also `GET /v2/`.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if self.log().contains("listening on")
                && TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok()
            {
                if self.opts.tls {
                    return Ok(());
                }
                if crate::http::get(&format!("{}/v2/", self.url()), &[])
                    .is_ok_and(|r| r.status == 200 || r.status == 401)
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!(
                    "not ready after {START_TIMEOUT:?}:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`: the host part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.opts.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// `127.0.0.1:PORT/REPO[:TAG|@DIGEST]` for `repo_ref` = `REPO[:TAG|@DIGEST]`.
    pub fn reference(&self, repo_ref: &str) -> String {
        format!("{}/{repo_ref}", self.addr)
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.opts.tls
    }

    /// The set-up it was started with.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// The user and password that may push and pull (`None` when anonymous).
    pub fn credentials(&self) -> Option<(String, String)> {
        match &self.opts.auth {
            Auth::Anonymous => None,
            Auth::Htpasswd { user, password } => Some((user.clone(), password.clone())),
            Auth::Token(t) => t.users.first().cloned(),
        }
    }

    /// The test CA of a TLS registry (its `ca_cert` is what a client must trust).
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// The token server of an `auth: token` registry.
    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The scratch directory (config, storage, log, certificates).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// The registry's combined stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The access log so far. The registry writes a line after the response is sent, so a
    /// client may finish reading first: this waits until the log stops growing (50 ms, at
    /// most 5 s) before parsing it.
    pub fn access_log(&self) -> Vec<AccessEntry> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.log();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.log();
            if now == last || Instant::now() > deadline {
                return parse_access_log(&now);
            }
            last = now;
        }
    }

    /// `(requests, body bytes)` the registry served for blob `digest` (`GET` and `HEAD`).
    pub fn blob_served(&self, digest: &str) -> (u64, u64) {
        self.access_log()
            .iter()
            .filter(|e| e.blob() == Some(digest) && (e.method == "GET" || e.method == "HEAD"))
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes))
    }
}

/// The guest's registry port ([`Registry::into_guest`]).
pub const GUEST_PORT: u16 = 5000;

/// A shell function for a VM script: `registry_up` brings the loopback up, starts the
/// registry [`Registry::into_guest`] put in the VM on `127.0.0.1:5000` (log in
/// `/tmp/registry.log`) and waits (up to 120 s) until `GET /v2/` answers; it returns non-zero
/// (with the log on stderr) if the registry never did.
pub const GUEST_REGISTRY_UP: &str = r#"
registry_up() {
    ip link set lo up
    /usr/bin/docker-registry serve /etc/docker-registry.yml >/tmp/registry.log 2>&1 &
    _i=0
    while ! wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null; do
        _i=$((_i + 1))
        if [ $_i -gt 240 ]; then cat /tmp/registry.log >&2; return 1; fi
        usleep 500000
    done
}
"#;

impl Registry {
    /// Put this registry into a VM: the `docker-registry` binary with the shared libraries
    /// `ldd` lists, a config for `127.0.0.1:5000` with anonymous access, and a copy of the
    /// storage (as pushed on the host) on the VM's disk at `/data/registry`. Start it in the
    /// script with [`GUEST_REGISTRY_UP`]'s `registry_up`. Call it after the pushes; the host
    /// registry may keep running.
    pub fn into_guest(&self, vm: crate::vm::VmRun) -> crate::vm::VmRun {
        let bin = crate::find_tool("docker-registry").expect("the registry is running");
        let vm = vm.dynamic_binary("usr/bin/docker-registry", &bin);
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: /data/registry\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{GUEST_PORT}\n  secret: erofs-rs-test-secret\n"
        );
        vm.bytes("etc/docker-registry.yml", config.as_bytes(), 0o644)
            .disk_file("registry", &self.storage_dir())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(
    dir: &Path,
    addr: SocketAddr,
    opts: &RegistryOptions,
    ca: Option<&TestCa>,
    token: Option<&TokenServer>,
) -> String {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    let mut y = format!(
        "version: 0.1\n\
         log:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n  secret: erofs-rs-test-secret\n",
        q(&dir.join("storage"))
    );
    if let Some(ca) = ca {
        y.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            q(&ca.server_cert),
            q(&ca.server_key)
        ));
    }
    match (&opts.auth, token) {
        (Auth::Anonymous, _) => {}
        (Auth::Htpasswd { .. }, _) => y.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: erofs-rs-test\n    path: {}\n",
            q(&dir.join("htpasswd"))
        )),
        (Auth::Token(_), Some(t)) => y.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            t.realm(),
            token_server::SERVICE,
            token_server::ISSUER,
            q(t.cert_bundle())
        )),
        (Auth::Token(_), None) => unreachable!("the token server starts first"),
    }
    y
}

/// Parse Apache combined-format lines (`HOST - USER [DATE] "METHOD TARGET PROTO" STATUS
/// BYTES "REFERER" "UA"`); other lines are skipped.
pub fn parse_access_log(log: &str) -> Vec<AccessEntry> {
    log.lines()
        .filter_map(|l| {
            let start = l.find("] \"")? + 3;
            let rest = &l[start..];
            let end = rest.find('"')?;
            let mut req = rest[..end].split(' ');
            let (method, target) = (req.next()?, req.next()?);
            let mut tail = rest[end + 1..].split_whitespace();
            let status = tail.next()?.parse().ok()?;
            let bytes = tail.next()?.parse().unwrap_or(0);
            Some(AccessEntry {
                method: method.into(),
                target: target.into(),
                status,
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn access_log_lines() {
        let log = "time=\"x\" level=info msg=\"listening on 127.0.0.1:5000\"\n\
            127.0.0.1 - - [06/Dec/2026:01:19:27 +0000] \"GET /v2/r/blobs/sha256:ab HTTP/1.1\" 206 1000 \"\" \"ua x\"\n\
            127.0.0.1 - erofs [06/Dec/2026:01:19:27 +0000] \"HEAD /v2/ HTTP/1.1\" 200 - \"\" \"\"\n";
        let e = super::parse_access_log(log);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].status, e[0].bytes, e[0].blob()),
            (206, 1000, Some("sha256:ab"))
        );
        assert_eq!(
            (e[1].method.as_str(), e[1].bytes, e[1].blob()),
            ("HEAD", 0, None)
        );
    }
}
