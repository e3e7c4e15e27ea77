//! The crate's error type.

use std::io;
use std::time::Duration;

use crate::digest::Digest;

/// What went wrong talking to a registry. Every variant names what it was about (a URL, a
/// digest, a status code) so that a log line is enough to reproduce it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reference string that is not `[host[:port]/]repo[:tag|@digest]`.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The string given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A digest string that is not `algorithm:hex` with a supported algorithm.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// The configuration cannot be used (an unreadable CA file, a bad mirror URL).
    #[error("configuration: {0}")]
    Config(String),
    /// Connecting, sending or receiving failed (after the retries).
    #[error("{url}: {source}")]
    Transport {
        /// The URL of the request.
        url: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The registry answered with a status this request cannot use.
    #[error("{url}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The URL of the request.
        url: String,
        /// The status code.
        status: u16,
        /// A short excerpt of the reply body or a note, when there is one.
        detail: Option<String>,
    },
    /// The manifest or blob does not exist (HTTP 404).
    #[error("{url}: not found")]
    NotFound {
        /// The URL of the request.
        url: String,
    },
    /// The registry refused the credentials (or the token it just issued).
    #[error("{url}: unauthorized{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Unauthorized {
        /// The URL of the request.
        url: String,
        /// What was tried.
        detail: Option<String>,
    },
    /// Retries ran out on 429/5xx replies or connection errors.
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// The URL of the request.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A reply that breaks the protocol (a bad header, a `Content-Range` that is not the
    /// range asked for, malformed JSON, a missing `Location`).
    #[error("{url}: bad reply: {what}")]
    BadReply {
        /// The URL of the request.
        url: String,
        /// What was wrong.
        what: String,
    },
    /// The body ended before the bytes announced or asked for.
    #[error("{url}: body cut short: {got} of {want} bytes")]
    ShortBody {
        /// The URL of the request.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        want: u64,
    },
    /// A reply larger than this client accepts for its kind (manifests, tokens).
    #[error("{url}: reply of {size} bytes exceeds the {limit}-byte limit for {what}")]
    TooLarge {
        /// The URL of the request.
        url: String,
        /// What the reply was (manifest, token, blob).
        what: &'static str,
        /// The size announced or read so far.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Content whose digest is not the one asked for: never handed to the caller.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (a URL or a description of the range).
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A layer whose content is not what its kind needs (a Nydus bootstrap layer without a
    /// readable bootstrap).
    #[error("layer {digest}: {what}")]
    BadLayer {
        /// The layer's digest.
        digest: Digest,
        /// What is wrong.
        what: String,
    },
    /// A read outside a blob.
    #[error("read of {len} bytes at {offset} is outside blob {digest} of {size} bytes")]
    OutOfRange {
        /// The blob.
        digest: Digest,
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
        /// The blob's size.
        size: u64,
    },
    /// An index with no manifest for the platform asked for.
    #[error("{reference}: no manifest for platform {platform} (index lists: {available})")]
    NoPlatform {
        /// The reference resolved.
        reference: String,
        /// The platform wanted.
        platform: String,
        /// The platforms the index lists.
        available: String,
    },
    /// A manifest or index of a media type or schema this client does not read.
    #[error("{url}: unsupported manifest: {what}")]
    UnsupportedManifest {
        /// The URL of the request.
        url: String,
        /// What was found.
        what: String,
    },
    /// Reading credentials failed (a config file that is not JSON, a failing helper).
    #[error("credentials for {host}: {reason}")]
    Credentials {
        /// The registry host.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// A retry would wait longer than the client allows (a huge `Retry-After`).
    #[error("{url}: server asked to retry after {after:?}, more than the {limit:?} allowed")]
    RetryTooLate {
        /// The URL of the request.
        url: String,
        /// What the server asked for.
        after: Duration,
        /// The most this client waits.
        limit: Duration,
    },
}

impl Error {
    /// Whether this error may go away on a retry of the same request (connection
    /// failures, cut bodies). Protocol and integrity errors are final.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transport { .. } | Error::ShortBody { .. })
    }
}

impl From<Error> for io::Error {
    /// Every error becomes `EIO` (`ErrorKind::Other` with the message), except a read out of
    /// range (`UnexpectedEof`) and a missing blob (`NotFound`).
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::OutOfRange { .. } => io::ErrorKind::UnexpectedEof,
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::Transport { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                io::ErrorKind::TimedOut
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
