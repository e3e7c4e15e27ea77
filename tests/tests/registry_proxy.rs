//! `erofs cat --image` (a subprocess, so the proxy variables are its own environment) through
//! an HTTP proxy: the fault proxy (`tests::fault_proxy`) in front of Debian's
//! `docker-registry`, the image pushed by skopeo, and the registry named by a host name
//! that does not resolve (`registry.invalid`), so the bytes can only arrive through the
//! proxy.
//!
//! - `HTTPS_PROXY`, then `HTTP_PROXY`, each alone: ureq 3 tunnels every proxied request with `CONNECT`
//!   (for `http://` URLs too); the file's bytes equal the source tree's, and the proxy
//!   counted the tunnels and the GETs (at the proxy, not by the client), the same GETs the
//!   registry's own access log holds;
//! - with `NO_PROXY=registry.invalid` the host is contacted directly, does not resolve, and
//!   the command fails cleanly: non-zero exit, an error naming the host, no panic, and the
//!   proxy saw nothing.

use std::path::Path;
use std::process::{Command, Output};

use tests::fault_proxy::FaultProxy;
use tests::oci_images;
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::Registry;
use tests::skopeo::Skopeo;
use tests::tree;

/// The host name the client is given for the registry: `.invalid` never resolves (RFC 2606).
const HOST: &str = "registry.invalid";

/// Every proxy variable ureq reads, cleared before a run sets its own.
const PROXY_VARS: [&str; 8] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `erofs cat --image REF --insecure-registry HOST:PORT PATH` with exactly `env` as its proxy
/// environment.
fn erofs_cat(reference: &str, insecure: &str, path: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(tree::erofs_cli());
    c.args([
        "cat",
        "--image",
        reference,
        "--insecure-registry",
        insecure,
        "-v",
        path,
    ]);
    for k in PROXY_VARS {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c.output().expect("run erofs")
}

#[test]
fn erofs_cat_through_an_http_proxy_and_not_with_no_proxy() {
    let Some(reg) = Registry::plain("registry_proxy/cat") else {
        return;
    };
    let Some(skopeo) = Skopeo::new(&reg.dir().join("skopeo")) else {
        return;
    };
    let dir: &Path = reg.dir();
    let tree = oci_images::layered_tree(&dir.join("tree"), 1 << 20);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::erofs_image(
        &layout,
        &tree.layers(),
        &Platform::host(),
        &dir.join("work"),
    )
    .expect("mkfs.erofs");
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", &reg, "lazy/proxy:v1");

    let proxy = FaultProxy::in_front_of(&reg);
    let authority = format!("{HOST}:{}", reg.addr().port());
    let reference = format!("{authority}/lazy/proxy:v1");
    let proxy_url = proxy.url();
    // Through the proxy, named by either variable alone (ureq takes one proxy for both
    // schemes: ALL_PROXY, then HTTPS_PROXY, then HTTP_PROXY, lower-case too).
    for var in ["HTTPS_PROXY", "HTTP_PROXY"] {
        proxy.reset_logs();
        let start = reg.access_log().len();
        let out = erofs_cat(&reference, &authority, "/etc/config", &[(var, &proxy_url)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{var}: erofs failed ({}): {err}",
            out.status
        );
        let want = std::fs::read(tree.upper.join("etc/config")).unwrap();
        assert!(
            out.stdout == want,
            "{var}: {} bytes, want {}",
            out.stdout.len(),
            want.len()
        );

        // Counted at the proxy: the tunnels it opened to our host, and the GETs through them.
        let log = proxy.log();
        let tunnels: Vec<_> = log.iter().filter(|s| s.method == "CONNECT").collect();
        let gets: Vec<_> = log.iter().filter(|s| s.method == "GET").collect();
        eprintln!(
            "{var}: {} CONNECTs ({:?}), GETs {:?}, {} body bytes; client: {}",
            tunnels.len(),
            tunnels
                .iter()
                .map(|s| s.target.as_str())
                .collect::<Vec<_>>(),
            gets.iter()
                .map(|s| (s.target.as_str(), s.status, s.bytes))
                .collect::<Vec<_>>(),
            proxy.total_bytes(),
            err.lines().last().unwrap_or("")
        );
        assert!(!tunnels.is_empty(), "{var}");
        assert!(tunnels.iter().all(|s| s.target == authority), "{tunnels:?}");
        assert!(
            log.iter()
                .all(|s| s.method == "CONNECT" || s.method == "GET"),
            "{log:?}"
        );
        assert!(
            gets.iter().any(|s| s.target.contains("/manifests/v1")),
            "{gets:?}"
        );
        assert!(gets.iter().any(|s| s.blob().is_some()), "{gets:?}");
        assert!(
            gets.iter().all(|s| s.status == 200 || s.status == 206),
            "{gets:?}"
        );
        // ... and they are the GETs the registry logged: nothing reached it another way.
        let registry_gets = reg
            .access_log()
            .iter()
            .skip(start)
            .filter(|e| e.method == "GET")
            .count();
        assert_eq!(registry_gets, gets.len(), "{var}");
    }

    // NO_PROXY names the host: contacted directly, it does not resolve.
    proxy.reset_logs();
    let out = erofs_cat(
        &reference,
        &authority,
        "/etc/config",
        &[
            ("HTTP_PROXY", &proxy_url),
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", HOST),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("with NO_PROXY={HOST}: {} / {}", out.status, err.trim());
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains(HOST), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(proxy.log().is_empty(), "{:?}", proxy.log());
}
