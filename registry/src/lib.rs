//! Lazy, range-based reads of blobs in OCI registries.
//!
//! `oci-lazy` resolves an image reference (`[host[:port]/]repo[:tag|@digest]`, with Docker
//! Hub's defaults) to the manifest for this platform and reads any byte range of any blob
//! of the repository, fetching only those bytes. It is what a lazy-pulling daemon needs
//! under its cache: it knows OCI and the distribution API, not any filesystem format (the
//! `erofs-rs` crates put EROFS and Nydus RAFS v6 images on top of it).
//!
//! - **Auth**: anonymous and credentialed Docker token flow from `WWW-Authenticate`
//!   challenges, Basic, credentials from a Docker config file (`auths`, `credHelpers`,
//!   `credsStore`; [`Config::auth_file`], `REGISTRY_AUTH_FILE`, `~/.docker/config.json`);
//!   tokens refreshed before they expire and when a `401` says so.
//! - **Transport**: HTTPS (rustls) with the system roots plus [`Config::ca_files`]; plain
//!   HTTP for loopback hosts that do not answer TLS and for [`Config::insecure_registries`]
//!   (asked in plain HTTP first, with no probe; HTTPS when they do not answer it);
//!   `HTTPS_PROXY`/`NO_PROXY`;
//!   [`Config::mirrors`] tried before the registry; redirects followed by hand (the target
//!   cached per blob, `Authorization` never sent to another host); one range per request;
//!   a `200` answering a range request streamed past (never held in memory); connection
//!   reuse; timeouts; retries with backoff and jitter on connection errors, cut bodies, `429`
//!   and `5xx` (honoring `Retry-After`). A body shorter than asked is an error, never short
//!   data.
//! - **Parallelism**: [`Blob::read_ranges`] merges near ranges into one request and splits
//!   large ones, then runs the requests in parallel (bounded by [`Config::parallel`]).
//! - **Integrity**: manifests and indexes are always digest-checked, whole blobs too
//!   ([`Blob::read_all`], [`Client::fetch_blob`]); [`Blob::read_verified`] checks a range
//!   against a digest the caller knows. A mismatch is [`Error::DigestMismatch`], never
//!   wrong bytes.
//! - **Counters**: [`Client::stats`] (requests, bytes, retries, …) for metrics.
//!
//! The client is blocking (one OS thread per request in flight) on purpose: it serves
//! kernel READ requests from worker threads. See `DESIGN.md` in the repository.
//!
//! # Example
//!
//! ```no_run
//! use oci_lazy::{Client, Config, Reference};
//!
//! let client = Client::new(Config::default())?;
//! let reference: Reference = "127.0.0.1:5000/app:v1".parse()?;
//! let image = client.resolve(&reference)?;
//! let layer = &image.layers[0];
//! let blob = client.blob_with_size(reference.repository(), &layer.digest, layer.size);
//! let mut head = [0u8; 4096];
//! blob.read_exact_at(&mut head, 0)?;
//! println!("{} requests, {} bytes", client.stats().requests, client.stats().bytes);
//! # Ok::<(), oci_lazy::Error>(())
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], which names the URL, status or digest involved;
//! `From<Error> for std::io::Error` gives `EIO`-style errors to I/O callers.
//!
//! # Panics
//!
//! No reply from a registry makes this crate panic; replies are size-capped (manifests
//! [`wire::MAX_MANIFEST`], tokens [`wire::MAX_TOKEN_REPLY`]).
//!
//! # Safety
//!
//! No `unsafe` code.
#![forbid(unsafe_code)]

mod blob;
mod challenge;
mod client;
mod config;
mod content_range;
mod credentials;
mod digest;
mod error;
mod image_config;
mod lazy;
mod manifest;
mod platform;
mod reference;
mod retry;
mod stats;
mod token;
mod transport;

pub use blob::{ARRIVAL_STEP, Blob};
pub use client::{Client, Image};
pub use config::Config;
pub use credentials::Credentials;
pub use digest::{Algorithm, Digest, Hasher};
pub use error::{Error, Result};
pub use image_config::{
    DEFAULT_PATH, ImageConfigError, MAX_ARG, MAX_ARGS, MAX_ENV, MAX_IMAGE_CONFIG, RunConfig,
};
pub use lazy::{
    BOOTSTRAP_PATH, EROFS_LAYER, LazyLayout, MAX_BOOTSTRAP, NYDUS_BOOTSTRAP, NYDUS_FEATURE,
    unpack_bootstrap,
};
pub use manifest::Layer;
pub use platform::Platform;
pub use reference::{DOCKER_HUB, DOCKER_HUB_API, Reference, Repository, Target};
pub use retry::RetryPolicy;
pub use stats::Stats;

/// The decoders of what a registry sends, exposed for fuzzing and tests. The client uses
/// exactly these; each returns an error (or `None`) for bad input and never panics.
pub mod wire {
    pub use crate::challenge::{Challenge, MAX_HEADER, parse_challenges};
    pub use crate::content_range::{ContentRange, parse_content_length};
    pub use crate::manifest::{
        DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST, Manifest, OCI_INDEX, OCI_MANIFEST,
        decode_manifest,
    };
    pub use crate::retry::parse_retry_after;
    pub use crate::token::{MAX_TOKEN_REPLY, TokenReply, parse_token_reply};
    pub use crate::transport::resolve_location;
}
