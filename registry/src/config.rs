//! How a [`Client`](crate::Client) connects, authenticates, retries and splits reads.

use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::Credentials;
use crate::platform::Platform;
use crate::retry::RetryPolicy;

/// Client settings. Start from [`Config::default`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Extra PEM files of CA certificates trusted besides the system roots (`--ca-file`).
    pub ca_files: Vec<PathBuf>,
    /// Registries (`host[:port]`) that may speak plain HTTP (`--insecure-registry`): the
    /// first request goes out in plain HTTP, with no probe before it; if it draws no
    /// registry answer (a connection error, or the `400` a TLS port gives to plain HTTP),
    /// HTTPS is tried (with certificate checks) and the request sent again over it when the
    /// host answers TLS. Loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) that are not
    /// listed may speak plain HTTP too, as Docker treats them, but are probed first (`GET
    /// /v2/` over TLS and in plain HTTP at once): nothing naming a repository goes out in
    /// plain HTTP to a host the user did not list.
    pub insecure_registries: Vec<String>,
    /// Mirror base URLs (`https://mirror:5000`) tried in order before the registry itself
    /// (`--mirror`), with `?ns=<registry>` as containerd sends it. A mirror that fails is
    /// skipped for the next one, and the registry is the last resort.
    pub mirrors: Vec<String>,
    /// The Docker config file to read credentials from (`--auth-file`); default
    /// `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub auth_file: Option<PathBuf>,
    /// Credentials per registry (`host[:port]`, `docker.io` for Docker Hub), taking
    /// precedence over the config file.
    pub credentials: Vec<(String, Credentials)>,
    /// Use `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` from the environment
    /// (loopback hosts are never proxied).
    pub proxy_from_env: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any read from the network (a stalled transfer fails after this).
    pub io_timeout: Duration,
    /// Retries on connection errors, cut bodies, 429 and 5xx replies.
    pub retry: RetryPolicy,
    /// Most range requests in flight at once for one read.
    pub parallel: usize,
    /// The most one range request asks for: larger reads are split into requests of this
    /// size (fetched in parallel), and merged ranges stop growing at it.
    pub split_size: u64,
    /// Ranges of one call at most this far apart are merged into one request (the bytes
    /// between them are read and dropped).
    pub merge_gap: u64,
    /// The platform an index is resolved for.
    pub platform: Platform,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ca_files: Vec::new(),
            insecure_registries: Vec::new(),
            mirrors: Vec::new(),
            auth_file: None,
            credentials: Vec::new(),
            proxy_from_env: true,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            parallel: 8,
            split_size: 4 << 20,
            merge_gap: 64 << 10,
            platform: Platform::current(),
            user_agent: concat!("oci-lazy/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
