//! `oci-lazy` through the fault-injecting proxy (`tests::fault_proxy`) in front of Debian's
//! `docker-registry`: every fault is either survived (retried, re-authenticated, read past)
//! with the right bytes, or ends in a typed error; never short or wrong data.
//!
//! - `401` on an expired token: a new token, the same bytes; and a token refreshed before it
//!   expires (no `401` at all);
//! - `429` / `503` with `Retry-After`: waited for and retried; a `Retry-After` beyond the
//!   client's limit fails at once; a registry that keeps failing runs out of retries;
//! - connection resets, bodies cut short, replies slower than the I/O timeout: retried; cut
//!   every time: an error;
//! - `200` with the whole blob for a range request: the range is read by skipping;
//! - `307` to a second host: followed without the registry's `Authorization`, and cached for
//!   the blob's later ranges;
//! - `erofs cat --image` through faults: the file's bytes, or a clean failure.

use std::time::{Duration, Instant};

use oci_lazy::{Blob, Client, Config, Credentials, Error, Reference};
use tests::fault_proxy::{Fault, FaultProxy, Match};
use tests::oci_images;
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::{Auth, Registry, RegistryOptions};
use tests::skopeo::Skopeo;
use tests::token_server::TokenOptions;

struct Setup {
    reg: Registry,
    proxy: FaultProxy,
    layout: OciLayout,
    tree: oci_images::LayeredTree,
}

/// A token registry (credentials required) holding an EROFS-layer image `f/app:v1`, and
/// the proxy in front of it.
fn setup(name: &str) -> Option<Setup> {
    let reg = Registry::start(
        name,
        RegistryOptions {
            tls: false,
            auth: Auth::Token(TokenOptions::default()),
        },
    )?;
    let skopeo = Skopeo::new(&reg.dir().join("skopeo"))?;
    let dir = reg.dir().join("img");
    let tree = oci_images::layered_tree(&dir.join("tree"), 1 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::erofs_image(
        &layout,
        &tree.layers(),
        &Platform::host(),
        &dir.join("work"),
    )?;
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", &reg, "f/app:v1");
    let proxy = FaultProxy::in_front_of(&reg);
    Some(Setup {
        reg,
        proxy,
        layout,
        tree,
    })
}

impl Setup {
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.proxy_from_env = false;
        c.credentials = vec![(
            self.proxy.host(),
            Credentials::Basic {
                username: "erofs".into(),
                password: "lazy-pull".into(),
            },
        )];
        c.auth_file = Some(self.reg.dir().join("none.json"));
        c.retry.base = Duration::from_millis(20);
        c
    }

    fn reference(&self) -> Reference {
        self.proxy.reference("f/app:v1").parse().unwrap()
    }

    /// The lower layer's blob through the proxy, and its bytes.
    fn blob(&self, client: &Client) -> (Blob, Vec<u8>) {
        let r = self.reference();
        let image = client.resolve(&r).unwrap();
        let l = &image.layers[0];
        (
            client.blob_with_size(r.repository(), &l.digest, l.size),
            self.layout.read_blob(&l.digest.to_string()),
        )
    }
}

fn check(blob: &Blob, want: &[u8], off: u64, len: usize) {
    let mut buf = vec![0u8; len];
    blob.read_exact_at(&mut buf, off).unwrap();
    assert!(buf == want[off as usize..off as usize + len], "{off}+{len}");
}

#[test]
fn survivable_faults() {
    let Some(s) = setup("registry_faults/survive") else {
        return;
    };
    let client = Client::new(s.config()).unwrap();
    let (blob, want) = s.blob(&client);
    let digest = blob.digest().to_string();
    check(&blob, &want, 0, 4096);
    let base = client.stats();
    assert_eq!(base.tokens, 1);

    // The registry refuses the token (as when it expires): a new one, the same bytes.
    s.proxy.inject(Match::Blobs, Fault::Unauthorized, 1);
    check(&blob, &want, 10_000, 5000);
    assert_eq!(client.stats().tokens, 2, "{:?}", client.stats());
    assert_eq!(s.proxy.pending_faults(), 0);

    // 429 and 503 with Retry-After: 1 s each, then the bytes.
    for status in [429, 503] {
        s.proxy.inject(
            Match::Blobs,
            Fault::Status {
                status,
                retry_after: Some(1),
            },
            1,
        );
        let t = Instant::now();
        let before = client.stats().retries;
        check(&blob, &want, 20_000, 3000);
        assert!(
            t.elapsed() >= Duration::from_millis(950),
            "{status}: waited {:?}",
            t.elapsed()
        );
        assert_eq!(client.stats().retries, before + 1, "{status}");
    }
    // 503 without Retry-After, a reset, a body cut short: retried with backoff.
    for fault in [
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        Fault::Reset,
        Fault::CutShort { after: 100 },
    ] {
        s.proxy.inject(Match::Blobs, fault.clone(), 2);
        let before = client.stats().retries;
        check(&blob, &want, 30_000, 70_000);
        assert_eq!(client.stats().retries, before + 2, "{fault:?}");
        assert_eq!(s.proxy.pending_faults(), 0, "{fault:?}");
    }
    // A reply slower than the client's I/O timeout: the request times out and is retried.
    let mut slow_cfg = s.config();
    slow_cfg.io_timeout = Duration::from_millis(700);
    let slow = Client::new(slow_cfg).unwrap();
    let (slow_blob, _) = s.blob(&slow);
    s.proxy
        .inject(Match::Blobs, Fault::Delay(Duration::from_secs(3)), 1);
    let t = Instant::now();
    check(&slow_blob, &want, 40_000, 1000);
    assert_eq!(slow.stats().retries, 1);
    assert!(
        t.elapsed() < Duration::from_millis(2900),
        "{:?}",
        t.elapsed()
    );

    // A faulty manifest request too.
    s.proxy.inject(
        Match::Manifests,
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        1,
    );
    client.resolve(&s.reference()).unwrap();

    // 200 with the whole blob for a range: read by skipping to the range.
    s.proxy.inject(Match::Blobs, Fault::IgnoreRange, 1);
    let before = client.stats();
    check(&blob, &want, want.len() as u64 - 9000, 8000);
    let after = client.stats();
    assert_eq!(after.ranges_ignored, before.ranges_ignored + 1);
    assert!(after.bytes - before.bytes >= want.len() as u64 - 1000);

    // A redirect to the blob host: followed without Authorization, then cached.
    s.proxy
        .inject(Match::Blob(digest.clone()), Fault::Redirect, 1);
    let log_before = s.proxy.log().len();
    check(&blob, &want, 50_000, 1000);
    check(&blob, &want, 60_000, 1000);
    check(&blob, &want, 70_000, 1000);
    let hits = s.proxy.host_log();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.iter().all(|h| h.authorization.is_none()), "{hits:?}");
    let at_registry: Vec<_> = s
        .proxy
        .log()
        .into_iter()
        .skip(log_before)
        .filter(|e| e.blob() == Some(digest.as_str()))
        .collect();
    assert_eq!(
        at_registry.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![307],
        "only the first range went through the registry: {at_registry:?}"
    );
    assert!(client.stats().redirects >= 1);
}

#[test]
fn unsurvivable_faults_are_errors() {
    let Some(s) = setup("registry_faults/fail") else {
        return;
    };
    let mut cfg = s.config();
    cfg.retry.attempts = 3;
    let client = Client::new(cfg).unwrap();
    let (blob, _) = s.blob(&client);
    let mut buf = vec![0u8; 10_000];
    // Cut short every time: never short data.
    s.proxy
        .inject_always(Match::Blobs, Fault::CutShort { after: 500 });
    let e = blob.read_exact_at(&mut buf, 0).unwrap_err();
    assert!(matches!(e, Error::RetriesExhausted { .. }), "{e}");
    assert!(e.to_string().contains("cut short"), "{e}");
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::Other);
    s.proxy.clear_faults();
    // Always 503: retries run out.
    s.proxy.inject_always(
        Match::Blobs,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    let e = blob.read_exact_at(&mut buf, 0).unwrap_err();
    assert!(
        matches!(e, Error::RetriesExhausted { attempts: 3, .. }),
        "{e}"
    );
    s.proxy.clear_faults();
    // A Retry-After longer than the client waits: an error at once.
    s.proxy.inject(
        Match::Blobs,
        Fault::Status {
            status: 429,
            retry_after: Some(3600),
        },
        1,
    );
    let t = Instant::now();
    let e = blob.read_exact_at(&mut buf, 0).unwrap_err();
    assert!(matches!(e, Error::RetryTooLate { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    s.proxy.clear_faults();
    // The token refused every time: unauthorized, not a loop.
    s.proxy.inject_always(Match::Blobs, Fault::Unauthorized);
    let e = blob.read_exact_at(&mut buf, 0).unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    s.proxy.clear_faults();
    // And after all that the blob reads fine.
    blob.read_exact_at(&mut buf, 0).unwrap();
}

#[test]
fn erofs_cat_through_faults() {
    let Some(s) = setup("registry_faults/cli") else {
        return;
    };
    let r = s.proxy.reference("f/app:v1");
    let want = std::fs::read(s.tree.upper.join("etc/config")).unwrap();
    let run = || {
        std::process::Command::new(tests::tree::erofs_cli())
            .args([
                "cat",
                "--image",
                &r,
                "--creds",
                "erofs:lazy-pull",
                "/etc/config",
            ])
            .env("REGISTRY_AUTH_FILE", s.reg.dir().join("none.json"))
            .output()
            .unwrap()
    };
    s.proxy.inject(Match::Blobs, Fault::Reset, 1);
    s.proxy.inject(
        Match::Blobs,
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        },
        1,
    );
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, want);
    s.proxy
        .inject_always(Match::Blobs, Fault::CutShort { after: 10 });
    let out = run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial data on stdout");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut short"), "{err}");
}

/// A token is replaced before it expires (60 s tokens, refreshed 15 s early), not after a
/// `401`: the registry never refuses one.
#[test]
fn token_refreshed_before_expiry() {
    let reg = Registry::start(
        "registry_faults/refresh",
        RegistryOptions {
            tls: false,
            auth: Auth::Token(TokenOptions {
                expires_in: 60,
                ..TokenOptions::default()
            }),
        },
    );
    let Some(reg) = reg else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let dir = reg.dir().join("img");
    let tree = oci_images::layered_tree(&dir.join("tree"), 10_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::erofs_image(
        &layout,
        &[&tree.lower],
        &Platform::host(),
        &dir.join("work"),
    )
    .unwrap();
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", &reg, "f/app:v1");
    let proxy = FaultProxy::in_front_of(&reg);
    let s = Setup {
        reg,
        proxy,
        layout,
        tree,
    };
    let client = Client::new(s.config()).unwrap();
    let (blob, want) = s.blob(&client);
    check(&blob, &want, 0, 100);
    assert_eq!(client.stats().tokens, 1);
    std::thread::sleep(Duration::from_secs(46));
    check(&blob, &want, 100, 100);
    assert_eq!(client.stats().tokens, 2, "a new token after 45 s");
    let refused: Vec<_> = s
        .proxy
        .log()
        .into_iter()
        .filter(|e| e.status == 401)
        .collect();
    // The first request of all learns the challenge; no later 401.
    assert_eq!(refused.len(), 1, "{refused:?}");
}

/// An early fetch (`RegistryStore::fetch_early_ranges`, as the trace's chunks are fetched
/// while the image mounts) hands its range over in pieces as they arrive: a range whose body
/// is cut short still serves a read within the part that arrived, without asking the
/// registry again (it could not: every request is cut); a read past the cut, once the
/// registry answers again, fetches for itself.
#[test]
fn an_early_range_cut_short_serves_the_pieces_that_arrived() {
    use ondemand::BlobStore;
    let Some(s) = setup("registry_faults/early") else {
        return;
    };
    let mut cfg = s.config();
    cfg.retry.attempts = 1;
    let client = Client::new(cfg).unwrap();
    let r = s.reference();
    let image = client.resolve(&r).unwrap();
    let layer = &image.layers[0];
    assert!(layer.size > 700_000, "the layer is {} bytes", layer.size);
    let want = s.layout.read_blob(&layer.digest.to_string());
    let store = ondemand::registry::RegistryStore::new(
        client.clone(),
        r.repository().clone(),
        &image.layers,
        Vec::new(),
    );
    let name = layer.digest.hex().as_bytes().to_vec();
    let blob_requests = || {
        s.proxy
            .log()
            .iter()
            .filter(|x| x.target.contains("/blobs/"))
            .count()
    };
    let before = blob_requests();
    s.proxy
        .inject_always(Match::Blobs, Fault::CutShort { after: 300_000 });
    store.fetch_early_ranges(&name, std::iter::once(0..700_000).collect(), 1, 0);
    let blob = store.open(&name).unwrap();
    // The first 128 KiB piece arrived before the cut: served from it.
    let mut buf = vec![0u8; 4096];
    blob.read_exact_at(&mut buf, 4096).unwrap();
    assert!(buf == want[4096..8192]);
    assert_eq!(blob_requests(), before + 1, "{:?}", s.proxy.log());
    // Past the cut: the early fetch failed there, the read asks the registry.
    s.proxy.clear_faults();
    blob.read_exact_at(&mut buf, 500_000).unwrap();
    assert!(buf == want[500_000..504_096]);
    assert_eq!(blob_requests(), before + 2, "{:?}", s.proxy.log());
}
