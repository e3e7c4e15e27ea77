//! `oci-lazy` and `erofs --image` against Debian's `docker-registry` (started by the test),
//! with images built by mkfs.erofs / nydus-image and pushed by skopeo: the pusher and the
//! registry are independent of the code under test, and what the registry served is
//! counted from its own access log.
//!
//! - plain HTTP: resolve, HEAD, ranges, merged and parallel ranges, whole blobs, digest
//!   checks; the whole EROFS layer read through the registry walks exactly like the local
//!   file; an index picks this platform's manifest;
//! - `erofs cat --image` of one small file fetches less than 1% of the image;
//! - `erofs extract|fsck --image` of EROFS-layer and Nydus images equal the local ones;
//! - htpasswd Basic over TLS with a test CA (credentials given, from an auth file, from a
//!   credential helper; refused without them or without the CA);
//! - `auth: token`: credentialed and anonymous token flows, one token per client, a wrong
//!   password refused;
//! - mirrors: a mirror that has the image serves it, a dead or empty one falls through.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};

use erofs_reader::{Image, ImageBuilder, Source};
use oci_lazy::{Blob, Client, Config, Credentials, Digest, Error, Reference};
use tests::docker_config::DockerConfig;
use tests::oci_images::{self, LayeredTree};
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::{Auth, Registry, RegistryOptions};
use tests::skopeo::Skopeo;
use tests::token_server::TokenOptions;
use tests::tree::{self, Compare};

/// The three-line adapter from a registry blob to the reader's source.
struct Remote(Blob);
impl Source for Remote {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        Ok(self.0.read_exact_at(buf, offset)?)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.size())
    }
}

/// An EROFS-layer image of a layered tree (big file of `big` bytes) pushed as `repo:v1`.
struct Pushed {
    layout: OciLayout,
    image: oci_images::Image,
    tree: LayeredTree,
    work: PathBuf,
}

fn push_erofs(reg: &Registry, skopeo: &Skopeo, repo: &str, big: usize) -> Pushed {
    let dir = reg.dir().join(repo.replace('/', "_"));
    let tree = oci_images::layered_tree(&dir.join("tree"), big);
    let layout = OciLayout::create(&dir.join("layout"));
    let work = dir.join("work");
    let image = oci_images::erofs_image(&layout, &tree.layers(), &Platform::host(), &work)
        .expect("mkfs.erofs");
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", reg, &format!("{repo}:v1"));
    Pushed {
        layout,
        image,
        tree,
        work,
    }
}

fn plain_config() -> Config {
    let mut c = Config::default();
    // No proxy from the environment of whoever runs the tests.
    c.proxy_from_env = false;
    c
}

fn reference(reg: &Registry, repo_ref: &str) -> Reference {
    reg.reference(repo_ref).parse().expect("reference")
}

fn erofs(
    args: &[&dyn AsRef<std::ffi::OsStr>],
    env: &[(&str, &dyn AsRef<std::ffi::OsStr>)],
) -> Output {
    let mut c = Command::new(tree::erofs_cli());
    for a in args {
        c.arg(a);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY");
    c.output().expect("run erofs")
}

/// Bytes `range` of `layer` of `r`'s image read through `client` equal the pushed blob's.
fn assert_range_as_pushed(
    client: &Client,
    r: &Reference,
    layer: &oci_lazy::Layer,
    layout: &OciLayout,
    range: std::ops::Range<usize>,
) {
    let mut buf = vec![0u8; range.len()];
    client
        .blob_with_size(r.repository(), &layer.digest, layer.size)
        .read_exact_at(&mut buf, range.start as u64)
        .unwrap();
    assert!(
        buf == layout.read_blob(&layer.digest.to_string())[range.clone()],
        "bytes {range:?} of {}",
        layer.digest
    );
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "erofs failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes the registry wrote for `GET`s after the first `skip` access-log entries.
fn served_since(reg: &Registry, skip: usize) -> (usize, u64) {
    let log = reg.access_log();
    let new: Vec<_> = log
        .iter()
        .skip(skip)
        .filter(|e| e.method == "GET")
        .collect();
    (new.len(), new.iter().map(|e| e.bytes).sum())
}

#[test]
fn plain_registry_ranges_and_whole_image() {
    let Some(reg) = Registry::plain("registry_client/plain") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "team/erofs", 3 << 20);
    let client = Client::new(plain_config()).unwrap();
    let r = reference(&reg, "team/erofs:v1");
    let image = client.resolve(&r).unwrap();
    assert_eq!(image.digest.to_string(), p.image.manifest.digest);
    assert_eq!(image.layers.len(), 2);
    assert!(
        image
            .layers
            .iter()
            .all(|l| l.media_type == "application/vnd.erofs.layer.v1")
    );
    // The config is digest-checked whole.
    let config = client
        .fetch_blob(r.repository(), &image.config.digest, 1 << 20)
        .unwrap();
    assert_eq!(config, p.layout.read_blob(&p.image.config.digest));

    let lower = &image.layers[0];
    let want = p.layout.read_blob(&lower.digest.to_string());
    // HEAD gives the size the manifest says.
    let blob = client.blob(r.repository(), &lower.digest).unwrap();
    assert_eq!(blob.size(), want.len() as u64);
    assert_eq!(blob.size(), lower.size);

    // Single ranges, counted at the registry: exactly the bytes asked for.
    let before = reg.blob_served(&lower.digest.to_string());
    let mut rng = tests::Rng(42);
    let mut asked = 0u64;
    for _ in 0..20 {
        let len = (rng.next() % 70_000 + 1) as usize;
        let off = rng.next() % (want.len() - len) as u64;
        let mut buf = vec![0u8; len];
        blob.read_exact_at(&mut buf, off).unwrap();
        assert!(buf == want[off as usize..off as usize + len], "{off}+{len}");
        asked += len as u64;
    }
    let after = reg.blob_served(&lower.digest.to_string());
    assert_eq!(after.1 - before.1, asked, "bytes served for 20 ranges");
    assert_eq!(after.0 - before.0, 20, "one request per range");

    // Several ranges at once: near ones merged, far ones in parallel.
    let before = reg.blob_served(&lower.digest.to_string());
    let spans = [
        (0u64, 100usize),
        (200, 100),
        (1 << 20, 4096),
        (2 << 20, 65536),
        (want.len() as u64 - 10, 10),
    ];
    let mut bufs: Vec<Vec<u8>> = spans.iter().map(|&(_, n)| vec![0u8; n]).collect();
    let mut ranges: Vec<(u64, &mut [u8])> = spans
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&(o, _), b)| (o, b.as_mut_slice()))
        .collect();
    blob.read_ranges(&mut ranges).unwrap();
    for (&(o, n), b) in spans.iter().zip(&bufs) {
        assert!(*b == want[o as usize..o as usize + n], "range {o}+{n}");
    }
    let after = reg.blob_served(&lower.digest.to_string());
    assert_eq!(after.0 - before.0, 4, "0+100 and 200+100 share one request");
    assert_eq!(after.1 - before.1, 300 + 4096 + 65536 + 10);

    // Handed over as the bytes arrive: each range in order, in parts of at least
    // ARRIVAL_STEP bytes (but its last) and at most 256 KiB + ARRIVAL_STEP, so a 1 MiB range
    // in at least four.
    let spans = [(100u64, 1usize << 20), (2 << 20, 5000)];
    let mut bufs: Vec<Vec<u8>> = spans.iter().map(|&(_, n)| vec![0u8; n]).collect();
    let mut ranges: Vec<(u64, &mut [u8])> = spans
        .iter()
        .zip(bufs.iter_mut())
        .map(|(&(o, _), b)| (o, b.as_mut_slice()))
        .collect();
    let parts = std::sync::Mutex::new(Vec::new());
    blob.read_ranges_arriving(&mut ranges, &|off, bytes: &[u8]| {
        assert!(
            bytes == &want[off as usize..off as usize + bytes.len()],
            "part {off}"
        );
        parts.lock().unwrap().push((off, bytes.len()));
    })
    .unwrap();
    let parts = parts.into_inner().unwrap();
    for &(o, n) in &spans {
        let mine: Vec<(u64, usize)> = parts
            .iter()
            .copied()
            .filter(|&(p, _)| (o..o + n as u64).contains(&p))
            .collect();
        let mut at = o;
        for (i, &(p, len)) in mine.iter().enumerate() {
            assert_eq!(p, at, "range {o}+{n}: parts {mine:?}");
            assert!(len <= (256 << 10) + oci_lazy::ARRIVAL_STEP, "{mine:?}");
            assert!(
                len >= oci_lazy::ARRIVAL_STEP || i + 1 == mine.len(),
                "{mine:?}"
            );
            at += len as u64;
        }
        assert_eq!(at, o + n as u64, "range {o}+{n}: parts {mine:?}");
        assert!(n < 1 << 20 || mine.len() >= 4, "{mine:?}");
    }

    // A large read is split into parallel requests of split_size.
    let mut cfg = plain_config();
    cfg.split_size = 256 << 10;
    let split_client = Client::new(cfg).unwrap();
    let big = split_client.blob_with_size(r.repository(), &lower.digest, lower.size);
    let before = reg.blob_served(&lower.digest.to_string());
    let all = big.read_all(64 << 20).unwrap();
    assert!(all == want);
    let after = reg.blob_served(&lower.digest.to_string());
    assert_eq!(after.0 - before.0, want.len().div_ceil(256 << 10) as u64);

    // Streamed whole, digest-checked at the end.
    let mut streamed = Vec::new();
    let n = client
        .copy_blob(r.repository(), &lower.digest, &mut streamed)
        .unwrap();
    assert_eq!(n, want.len() as u64);
    assert!(streamed == want);

    // Reads outside the blob and wrong digests are errors, never bytes.
    let mut b = [0u8; 2];
    assert!(matches!(
        blob.read_exact_at(&mut b, blob.size() - 1),
        Err(Error::OutOfRange { .. })
    ));
    let mut buf = vec![0u8; 4096];
    blob.read_verified(&mut buf, 0, &Digest::sha256(&want[..4096]))
        .unwrap();
    assert!(matches!(
        blob.read_verified(&mut buf, 1, &Digest::sha256(&want[..4096])),
        Err(Error::DigestMismatch { .. })
    ));
    let unknown = Digest::sha256(b"not a blob of this repository");
    assert!(matches!(
        client.fetch_blob(r.repository(), &unknown, 1 << 20),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        client.resolve(&reference(&reg, "team/erofs:nope")),
        Err(Error::NotFound { .. })
    ));

    // Each layer read through the registry walks exactly like its local file.
    for (i, layer) in image.layers.iter().enumerate() {
        let remote = Image::from_source(Remote(client.blob_with_size(
            r.repository(),
            &layer.digest,
            layer.size,
        )))
        .unwrap();
        let local = ImageBuilder::open(p.work.join(format!("layer-{i}.erofs")))
            .unwrap()
            .build()
            .unwrap();
        let (want, got) = (tree::snapshot_image(&local), tree::snapshot_image(&remote));
        tree::compare(&want, &got, &Compare::default())
            .unwrap_or_else(|d| panic!("layer {i}: {d}"));
        assert!(want.len() > 5);
    }
    let s = client.stats();
    assert!(
        s.requests > 20 && s.bytes > asked && s.retries == 0,
        "{s:?}"
    );
    let _ = p.tree;
}

#[test]
fn index_resolves_to_this_platform() {
    let Some(reg) = Registry::plain("registry_client/index") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let dir = reg.dir().join("idx");
    let tree = oci_images::layered_tree(&dir.join("tree"), 10_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let host = oci_images::erofs_image(&layout, &[&tree.lower], &Platform::host(), &dir.join("w1"))
        .unwrap();
    let other =
        oci_images::erofs_image(&layout, &[&tree.upper], &Platform::other(), &dir.join("w2"))
            .unwrap();
    // The decoy first: the client must pick by platform, not by position.
    let idx = oci_images::index(&layout, &[&other, &host]);
    layout.tag("multi", &idx);
    skopeo.push(layout.dir(), "multi", &reg, "multi/app:multi");
    let client = Client::new(plain_config()).unwrap();
    let image = client.resolve(&reference(&reg, "multi/app:multi")).unwrap();
    assert_eq!(
        image.index_digest.map(|d| d.to_string()),
        Some(idx.digest.clone())
    );
    assert_eq!(image.digest.to_string(), host.manifest.digest);
    assert_eq!(image.layers[0].digest.to_string(), host.layers[0].digest);
    // By digest too.
    let by_digest = client
        .resolve(&reference(&reg, &format!("multi/app@{}", idx.digest)))
        .unwrap();
    assert_eq!(by_digest.digest, image.digest);
    // A platform the index does not list.
    let mut cfg = plain_config();
    cfg.platform.architecture = "s390x".into();
    assert!(matches!(
        Client::new(cfg)
            .unwrap()
            .resolve(&reference(&reg, "multi/app:multi")),
        Err(Error::NoPlatform { .. })
    ));
}

#[test]
fn erofs_cat_fetches_under_one_percent() {
    let Some(reg) = Registry::plain("registry_client/cat") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "lazy/cat", 40 << 20);
    let total: u64 = p.image.layers.iter().map(|l| l.size).sum::<u64>() + p.image.config.size;
    let r = reg.reference("lazy/cat:v1");
    let start = reg.access_log().len();
    // The top layer by default (it says so), the lower one with --layer 0.
    let out = erofs(&[&"cat", &"--image", &r, &"/etc/config"], &[]);
    assert_eq!(ok(&out), "version = 2, from the upper layer\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 EROFS layers") && err.contains("layer 1"),
        "{err}"
    );
    let out = erofs(
        &[
            &"cat",
            &"--image",
            &r,
            &"--layer",
            &"0",
            &"-v",
            &"/small/s5",
        ],
        &[],
    );
    let want = std::fs::read(p.tree.lower.join("small/s5")).unwrap();
    assert!(out.stdout == want);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GET ") && err.contains("erofs: registry: "),
        "{err}"
    );
    // Counted at the registry, every GET of both commands (manifest, blobs).
    let (requests, bytes) = served_since(&reg, start);
    eprintln!(
        "erofs cat --image (twice): {requests} GETs, {bytes} bytes served of a {total}-byte image ({:.3}%)",
        bytes as f64 * 100.0 / total as f64
    );
    assert!(bytes * 100 < total, "{bytes} bytes of {total}");
}

#[test]
fn erofs_extract_and_fsck_through_the_registry() {
    let Some(reg) = Registry::plain("registry_client/extract") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "lazy/extract", 1 << 20);
    let r = reg.reference("lazy/extract:v1");
    let dir = reg.dir().join("out");
    for layer in ["0", "1"] {
        let local = p.work.join(format!("layer-{layer}.erofs"));
        let (a, b) = (
            dir.join(format!("local-{layer}")),
            dir.join(format!("remote-{layer}")),
        );
        ok(&erofs(&[&"extract", &local, &a], &[]));
        ok(&erofs(
            &[&"extract", &"--image", &r, &"--layer", &layer, &b],
            &[],
        ));
        tree::compare(
            &tree::snapshot_dir(&a),
            &tree::snapshot_dir(&b),
            &Compare::default(),
        )
        .unwrap_or_else(|d| panic!("layer {layer}: {d}"));
        let stat = ok(&erofs(
            &[&"stat", &"--image", &r, &"--layer", &layer, &"/etc/config"],
            &[],
        ));
        let local_stat = ok(&erofs(&[&"stat", &local, &"/etc/config"], &[]));
        assert_eq!(stat, local_stat);
        let fsck = ok(&erofs(&[&"fsck", &"--image", &r, &"--layer", &layer], &[]));
        assert!(fsck.contains(", 0 errors"), "{fsck}");
    }
    // The lower layer's files are the lower tree's.
    let a = dir.join("remote-0");
    for f in ["data/big.txt", "data/random.bin", "small/s3", "etc/config"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(p.tree.lower.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn nydus_image_through_the_registry() {
    let Some(reg) = Registry::plain("registry_client/nydus") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let dir = reg.dir().join("nydus");
    let tree = oci_images::layered_tree(&dir.join("tree"), 2 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    let Some(n) = oci_images::nydus_image(
        &layout,
        &tree.layers(),
        &Platform::host(),
        &dir.join("work"),
    ) else {
        return;
    };
    layout.tag("v1", &n.image.manifest);
    skopeo.push(layout.dir(), "v1", &reg, "lazy/nydus:v1");
    let r = reg.reference("lazy/nydus:v1");
    let (a, b) = (dir.join("local"), dir.join("remote"));
    ok(&erofs(
        &[&"extract", &n.bootstrap, &"--blob-dir", &n.blob_dir, &a],
        &[],
    ));
    let start = reg.access_log().len();
    let out = erofs(&[&"extract", &"--image", &r, &"-v", &b], &[]);
    ok(&out);
    tree::compare(
        &tree::snapshot_dir(&a),
        &tree::snapshot_dir(&b),
        &Compare::default(),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    // The merged tree's files.
    for f in ["data/big.txt", "etc/config", "new/file.txt", "opaque/c"] {
        assert!(
            std::fs::read(b.join(f)).unwrap() == std::fs::read(tree.merged.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!b.join("data/gone.txt").exists() && !b.join("opaque/a").exists());
    let (requests, bytes) = served_since(&reg, start);
    eprintln!("nydus extract --image: {requests} GETs, {bytes} bytes");
    // And cat of one small file.
    let out = erofs(&[&"cat", &"--image", &r, &"/small/s1"], &[]);
    assert!(out.stdout == std::fs::read(tree.merged.join("small/s1")).unwrap());

    // The registry serves a data blob with one byte changed: the chunk digests catch it,
    // the file reads fail (EIO), no wrong byte is written.
    let blob = &n.image.layers[0];
    let hex = blob.hex();
    let path = reg.storage_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let c = dir.join("corrupt");
    let out = erofs(&[&"extract", &"--image", &r, &c], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("digest"), "{err}");
}

fn basic_registry(name: &str) -> Option<(Registry, Skopeo, Pushed)> {
    let reg = Registry::basic_tls(name)?;
    let skopeo = Skopeo::new(&reg.dir().join("skopeo"))?;
    let p = push_erofs(&reg, &skopeo, "secure/app", 100_000);
    Some((reg, skopeo, p))
}

#[test]
fn basic_auth_over_tls() {
    let Some((reg, _skopeo, p)) = basic_registry("registry_client/basic") else {
        return;
    };
    let (user, password) = reg.credentials().unwrap();
    let ca = reg.ca().unwrap().ca_cert.clone();
    let r = reference(&reg, "secure/app:v1");
    let host = reg.host();
    let creds = Credentials::Basic {
        username: user.clone(),
        password: password.clone(),
    };
    // CA and credentials: the image.
    let mut cfg = plain_config();
    cfg.ca_files = vec![ca.clone()];
    cfg.credentials = vec![(host.clone(), creds.clone())];
    let client = Client::new(cfg.clone()).unwrap();
    let image = client.resolve(&r).unwrap();
    assert_eq!(image.digest.to_string(), p.image.manifest.digest);
    let l = &image.layers[1];
    assert_range_as_pushed(&client, &r, l, &p.layout, 500..1500);
    // No credentials: unauthorized; a wrong password too.
    let mut anon = cfg.clone();
    anon.credentials.clear();
    anon.auth_file = Some(reg.dir().join("no-such-config.json"));
    assert!(matches!(
        Client::new(anon).unwrap().resolve(&r),
        Err(Error::Unauthorized { .. })
    ));
    let mut wrong = cfg.clone();
    wrong.credentials = vec![(
        host.clone(),
        Credentials::Basic {
            username: user.clone(),
            password: "wrong".into(),
        },
    )];
    assert!(matches!(
        Client::new(wrong).unwrap().resolve(&r),
        Err(Error::Unauthorized { .. })
    ));
    // No CA: the certificate is refused (a transport error after the retries).
    let mut no_ca = cfg.clone();
    no_ca.ca_files.clear();
    no_ca.retry.attempts = 1;
    let e = Client::new(no_ca).unwrap().resolve(&r).unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("certificate")
            || e.to_string().contains("UnknownIssuer"),
        "{e}"
    );
    // From a Docker config file (`auths`).
    let auth_file =
        DockerConfig::auths(&reg.dir().join("auths"), &[(&host, &user, &password)]).file;
    let mut from_file = cfg.clone();
    from_file.credentials.clear();
    from_file.auth_file = Some(auth_file.clone());
    Client::new(from_file).unwrap().resolve(&r).unwrap();

    // The CLI: --ca-file with REGISTRY_AUTH_FILE, with --creds, and with a credential helper.
    let rs = reg.reference("secure/app:v1");
    let out = erofs(
        &[&"cat", &"--image", &rs, &"--ca-file", &ca, &"/etc/config"],
        &[("REGISTRY_AUTH_FILE", &auth_file)],
    );
    assert_eq!(ok(&out), "version = 2, from the upper layer\n");
    let creds_arg = format!("{user}:{password}");
    let out = erofs(
        &[
            &"ls",
            &"--image",
            &rs,
            &"--ca-file",
            &ca,
            &"--creds",
            &creds_arg,
            &"/",
        ],
        &[("REGISTRY_AUTH_FILE", &reg.dir().join("none.json"))],
    );
    assert!(ok(&out).contains("etc"));
    for (kind, dc) in [
        (
            "credHelpers",
            DockerConfig::cred_helper(
                &reg.dir().join("helper"),
                "erofstest",
                &host,
                &user,
                &password,
            ),
        ),
        (
            "credsStore",
            DockerConfig::creds_store(
                &reg.dir().join("store"),
                "erofstest2",
                &host,
                &user,
                &password,
            ),
        ),
    ] {
        let out = erofs(
            &[
                &"cat",
                &"--image",
                &rs,
                &"--ca-file",
                &ca,
                &"--auth-file",
                &dc.file,
                &"/etc/config",
            ],
            &[("PATH", &dc.path_env())],
        );
        assert_eq!(ok(&out), "version = 2, from the upper layer\n", "{kind}");
        assert_eq!(dc.helper_calls(), vec![host.clone()], "{kind}");
    }
    // Without any credentials the CLI says unauthorized.
    let out = erofs(
        &[&"ls", &"--image", &rs, &"--ca-file", &ca, &"/"],
        &[
            ("REGISTRY_AUTH_FILE", &reg.dir().join("none.json")),
            ("HOME", &reg.dir()),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
}

#[test]
fn token_auth_flows() {
    // (Expiry is exercised through the fault proxy: the registry accepts tokens for a
    // minute past their `exp`.)
    let opts = TokenOptions {
        anonymous_pull: true,
        ..TokenOptions::default()
    };
    let Some(reg) = Registry::start(
        "registry_client/token",
        RegistryOptions {
            tls: false,
            auth: Auth::Token(opts),
        },
    ) else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "private/app", 100_000);
    let r = reference(&reg, "private/app:v1");
    let (user, password) = ("erofs".to_string(), "lazy-pull".to_string());
    let ts = reg.token_server().unwrap();
    for creds in [
        Some(Credentials::Basic {
            username: user.clone(),
            password: password.clone(),
        }),
        None,
    ] {
        let mut cfg = plain_config();
        cfg.auth_file = Some(reg.dir().join("none.json"));
        cfg.credentials = creds.iter().map(|c| (reg.host(), c.clone())).collect();
        let client = Client::new(cfg).unwrap();
        let issued = ts.issued().len();
        let image = client.resolve(&r).unwrap();
        assert_eq!(image.digest.to_string(), p.image.manifest.digest);
        let l = &image.layers[0];
        let blob = client.blob_with_size(r.repository(), &l.digest, l.size);
        let want = p.layout.read_blob(&l.digest.to_string());
        let mut buf = vec![0u8; 5000];
        blob.read_exact_at(&mut buf, 100).unwrap();
        assert!(buf == want[100..5100]);
        assert_eq!(
            client.stats().tokens,
            1,
            "one token for manifests and blobs"
        );
        let new: Vec<_> = ts.issued().into_iter().skip(issued).collect();
        assert_eq!(new.len(), 1);
        assert_eq!(
            new[0].user.as_deref(),
            creds.as_ref().map(|_| "erofs"),
            "{new:?}"
        );
    }
    // Wrong credentials: the token server refuses them.
    let mut cfg = plain_config();
    cfg.credentials = vec![(
        reg.host(),
        Credentials::Basic {
            username: user,
            password: "bad".into(),
        },
    )];
    assert!(matches!(
        Client::new(cfg).unwrap().resolve(&r),
        Err(Error::Unauthorized { .. })
    ));
}

#[test]
fn mirrors_tried_in_order() {
    let Some(upstream) = Registry::plain("registry_client/mirror-upstream") else {
        return;
    };
    let Some(mirror) = Registry::plain("registry_client/mirror") else {
        return;
    };
    let Some(empty) = Registry::plain("registry_client/mirror-empty") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&upstream.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&upstream, &skopeo, "m/app", 100_000);
    skopeo.push(p.layout.dir(), "v1", &mirror, "m/app:v1");
    let r = reference(&upstream, "m/app:v1");
    let dead = format!("http://127.0.0.1:{}", tests::registry::free_port());
    let mut cfg = plain_config();
    cfg.retry.attempts = 2;
    cfg.mirrors = vec![dead, empty.url(), mirror.url()];
    let client = Client::new(cfg).unwrap();
    let (u0, m0) = (upstream.access_log().len(), mirror.access_log().len());
    let image = client.resolve(&r).unwrap();
    let l = &image.layers[0];
    assert_range_as_pushed(&client, &r, l, &p.layout, 0..4096);
    // The upstream saw no GET but the scheme probe's `/v2/` (it is a loopback registry:
    // asked over TLS and in plain HTTP at once).
    let upstream_gets: Vec<_> = upstream
        .access_log()
        .into_iter()
        .skip(u0)
        .filter(|e| e.method == "GET" && e.target != "/v2/")
        .collect();
    assert!(upstream_gets.is_empty(), "{upstream_gets:?}");
    let m: Vec<_> = mirror.access_log().into_iter().skip(m0).collect();
    assert!(
        m.iter()
            .all(|e| e.target.contains(&format!("ns={}", upstream.host()))),
        "{m:?}"
    );
    assert!(client.stats().mirror_fallbacks >= 2);
    // Only the upstream has it: every mirror fails through to it.
    let only = push_erofs(&upstream, &skopeo, "m/only", 10_000);
    let image = client.resolve(&reference(&upstream, "m/only:v1")).unwrap();
    assert_eq!(image.digest.to_string(), only.image.manifest.digest);
}

/// A registry declared insecure (`--insecure-registry`) is sent its first request, the
/// manifest, in plain HTTP with no `/v2/` probe before it (a round trip less); a loopback
/// registry that is not declared is still probed first (`/v2/` over TLS and in plain HTTP
/// at once). A declared host that speaks TLS answers the plain request with a `400`: the
/// client then probes, finds HTTPS, and sends the request again over it.
#[test]
fn declared_insecure_registry_is_asked_without_a_probe() {
    let Some(reg) = Registry::plain("registry_client/declared") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "d/app", 10_000);
    let r = reference(&reg, "d/app:v1");
    let gets_since = |skip: usize| -> Vec<String> {
        reg.access_log()
            .into_iter()
            .skip(skip)
            .filter(|e| e.method == "GET" || e.method == "HEAD")
            .map(|e| e.target)
            .collect()
    };
    // Declared: the manifest first, no probe.
    let mut cfg = plain_config();
    cfg.insecure_registries = vec![reg.host()];
    let client = Client::new(cfg).unwrap();
    let start = reg.access_log().len();
    let image = client.resolve(&r).unwrap();
    assert_eq!(image.digest.to_string(), p.image.manifest.digest);
    let l = &image.layers[0];
    assert_range_as_pushed(&client, &r, l, &p.layout, 0..4096);
    let gets = gets_since(start);
    assert!(
        gets.first().is_some_and(|t| t.ends_with("/manifests/v1")),
        "{gets:?}"
    );
    assert!(!gets.iter().any(|t| t == "/v2/"), "{gets:?}");
    assert_eq!(client.stats().requests, gets.len() as u64, "{gets:?}");
    // Not declared (loopback): probed first.
    let client = Client::new(plain_config()).unwrap();
    let start = reg.access_log().len();
    client.resolve(&r).unwrap();
    let gets = gets_since(start);
    assert_eq!(gets.first().map(String::as_str), Some("/v2/"), "{gets:?}");

    // Declared, but speaking TLS: the plain request draws a 400, then HTTPS.
    let Some((tls, _skopeo, tp)) = basic_registry("registry_client/declared-tls") else {
        return;
    };
    let mut cfg = plain_config();
    cfg.ca_files = vec![tls.ca().unwrap().ca_cert.clone()];
    let (user, password) = tls.credentials().unwrap();
    cfg.credentials = vec![(
        tls.host(),
        Credentials::Basic {
            username: user,
            password,
        },
    )];
    cfg.insecure_registries = vec![tls.host()];
    let client = Client::new(cfg).unwrap();
    let tr = reference(&tls, "secure/app:v1");
    let image = client.resolve(&tr).unwrap();
    assert_eq!(image.digest.to_string(), tp.image.manifest.digest);
    let l = &image.layers[1];
    assert_range_as_pushed(&client, &tr, l, &tp.layout, 500..1500);
}

/// A registry that serves other bytes than the digest names (its storage flipped under it):
/// manifests, configs and whole blobs are refused with `DigestMismatch`, never returned.
#[test]
fn lying_registry_is_caught() {
    let Some(reg) = Registry::plain("registry_client/liar") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let p = push_erofs(&reg, &skopeo, "liar/app", 10_000);
    let flip = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = reg.storage_dir().join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        let mut b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let i = b.len() / 2;
        b[i] ^= 0x20;
        std::fs::write(&path, b).unwrap();
    };
    let client = Client::new(plain_config()).unwrap();
    let r = reference(&reg, "liar/app:v1");
    let image = client.resolve(&r).unwrap();
    flip(&p.image.config.digest);
    let e = client
        .fetch_blob(r.repository(), &image.config.digest, 1 << 20)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    let l = &image.layers[1];
    flip(&l.digest.to_string());
    let blob = client.blob_with_size(r.repository(), &l.digest, l.size);
    assert!(matches!(
        blob.read_all(1 << 30),
        Err(Error::DigestMismatch { .. })
    ));
    // The Nydus bootstrap fetch unpacks as the bytes arrive, but a digest mismatch is
    // reported before whatever the unpacking found: layer 0 (an EROFS image, not a gzip
    // tar) is a bad layer as served, a mismatch once flipped.
    let l0 = image.layers[0].clone();
    let e = client
        .fetch_nydus_bootstrap(r.repository(), &l0)
        .unwrap_err();
    assert!(matches!(e, Error::BadLayer { .. }), "{e}");
    flip(&l0.digest.to_string());
    let e = client
        .fetch_nydus_bootstrap(r.repository(), &l0)
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    // (The registry itself refuses to serve a manifest whose bytes changed: 500.)
    let _ = p.tree;
}

/// A server that answers every request with `200`, `body` and `headers` (a registry lying
/// about a manifest), on 127.0.0.1.
fn liar(body: &'static str, headers: String) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            // One read takes the request (or a TLS hello, which gets this plain answer too).
            let _ = c.set_read_timeout(Some(std::time::Duration::from_millis(300)));
            let _ = c.read(&mut [0u8; 8192]);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{headers}Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr.to_string()
}

#[test]
fn manifests_are_digest_checked() {
    const M: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[]}"#;
    let other = Digest::sha256(b"another manifest");
    let client = Client::new(plain_config()).unwrap();
    // By digest: the bytes must hash to it.
    let host = liar(M, String::new());
    let r: Reference = format!("{host}/x@{other}").parse().unwrap();
    let e = client.resolve(&r).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    let good: Reference = format!("{host}/x@{}", Digest::sha256(M.as_bytes()))
        .parse()
        .unwrap();
    client.resolve(&good).unwrap();
    // By tag: the registry's Docker-Content-Digest must be the bytes' digest.
    let host = liar(M, format!("Docker-Content-Digest: {other}\r\n"));
    let e = client
        .resolve(&format!("{host}/x:v1").parse().unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}
