//! The fault proxy (`tests::fault_proxy`) in front of a real registry, checked with the
//! fixtures' tiny std-only HTTP client and raw sockets (never the client under test):
//!
//! - pass-through: manifests and ranges arrive intact, kept-alive connections carry several
//!   requests, an absolute-form request (the proxy as `HTTP_PROXY`) is served too, and the
//!   proxy's counts equal the registry's own access log;
//! - a `CONNECT` tunnel (the proxy as `HTTPS_PROXY`) to any host name carries plain HTTP to
//!   the registry, counted like direct requests; a TLS handshake in it closes the connection;
//! - each fault hits exactly the next N matching requests, then traffic is clean again:
//!   `429`/`503` with `Retry-After`, a reset, a body cut short (the client sees fewer bytes
//!   than `Content-Length`), `200` with the whole blob for a range request, an extra delay;
//! - a redirect to the blob host, which serves the right range and records that the client
//!   sent it no `Authorization`; an injected `401` is the token registry's own challenge;
//! - latency and bandwidth pace the link (lower bounds only: a loaded machine is slower,
//!   never faster).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use tests::fault_proxy::{Fault, FaultProxy, Match};
use tests::http;
use tests::oci_images::{self, Image};
use tests::oci_layout::{OciLayout, Platform, media};
use tests::registry::Registry;
use tests::skopeo::Skopeo;

/// Push a small two-layer image as `demo/app:v1`; returns the layout and image.
fn pushed(reg: &Registry, dir: &Path) -> Option<(OciLayout, Image)> {
    let skopeo = Skopeo::new(&dir.join("skopeo"))?;
    let layers = oci_images::layered_tree(&dir.join("tree"), 300_000);
    let layout = OciLayout::create(&dir.join("layout"));
    let image = oci_images::targz_image(
        &layout,
        &layers.layers(),
        &Platform::host(),
        &dir.join("work"),
    )?;
    layout.tag("v1", &image.manifest);
    skopeo.push(layout.dir(), "v1", reg, "demo/app:v1");
    Some((layout, image))
}

fn blob_url(base: &str, digest: &str) -> String {
    format!("{base}/v2/demo/app/blobs/{digest}")
}

#[test]
fn connect_tunnel_serves_and_counts() {
    let Some(reg) = Registry::plain("fixture_fault_proxy/connect") else {
        return;
    };
    let (layout, image) = pushed(&reg, reg.dir()).unwrap();
    let proxy = FaultProxy::in_front_of(&reg);
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);
    let before = reg.blob_served(&layer.digest);

    // As an HTTPS_PROXY: CONNECT to a host that does not exist, then plain HTTP through the
    // tunnel (two requests on it) reaches the one upstream.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    write!(
        s,
        "CONNECT registry.invalid:5000 HTTP/1.1\r\nHost: registry.invalid:5000\r\n\r\n"
    )
    .unwrap();
    let head = http::read_response_head(&mut rd).unwrap();
    assert_eq!(
        (head.status, head.reason.as_str()),
        (200, "Connection established")
    );
    for (a, b) in [(0u64, 999u64), (5000, 5099)] {
        write!(
            s,
            "GET /v2/demo/app/blobs/{} HTTP/1.1\r\nHost: registry.invalid:5000\r\nRange: bytes={a}-{b}\r\n\r\n",
            layer.digest
        )
        .unwrap();
        let head = http::read_response_head(&mut rd).unwrap();
        assert_eq!(head.status, 206);
        let mut body = Vec::new();
        http::copy_body(&mut rd, &mut body, head.framing("GET").unwrap(), u64::MAX).unwrap();
        assert_eq!(body, &blob[a as usize..=b as usize]);
    }
    drop((s, rd));

    // A TLS handshake through a tunnel is not HTTP: the proxy closes the connection.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    write!(
        s,
        "CONNECT registry.invalid:443 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert_eq!(http::read_response_head(&mut rd).unwrap().status, 200);
    s.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, b'\r', b'\n', b'\r', b'\n',
    ])
    .unwrap();
    let mut rest = Vec::new();
    let _ = rd.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    let log = proxy.log();
    let tunnels: Vec<_> = log
        .iter()
        .filter(|s| s.method == "CONNECT")
        .map(|s| (s.target.as_str(), s.status))
        .collect();
    assert_eq!(
        tunnels,
        [
            ("registry.invalid:5000", 200),
            ("registry.invalid:443", 200)
        ]
    );
    // The proxy counts what the registry itself logged.
    let at_proxy = proxy.blob_served(&layer.digest);
    assert_eq!(at_proxy, (2, 1000 + 100));
    let after = reg.blob_served(&layer.digest);
    assert_eq!((after.0 - before.0, after.1 - before.1), at_proxy);
}

#[test]
fn pass_through_counts_what_the_registry_serves() {
    let Some(reg) = Registry::plain("fixture_fault_proxy/pass") else {
        return;
    };
    let (layout, image) = pushed(&reg, reg.dir()).unwrap();
    let proxy = FaultProxy::in_front_of(&reg);
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);
    let before = reg.blob_served(&layer.digest);

    let m = http::get(
        &format!("{}/v2/demo/app/manifests/v1", proxy.url()),
        &[("Accept", media::MANIFEST)],
    )
    .unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(m.body, layout.read_blob(&image.manifest.digest));
    let r = http::get(
        &blob_url(&proxy.url(), &layer.digest),
        &[("Range", "bytes=100-100099")],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &blob[100..100_100]);

    // Two requests on one kept-alive connection.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rd = BufReader::new(s.try_clone().unwrap());
    for (a, b) in [(0u64, 999u64), (5000, 5099)] {
        write!(
            s,
            "GET /v2/demo/app/blobs/{} HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{b}\r\n\r\n",
            layer.digest
        )
        .unwrap();
        let head = http::read_response_head(&mut rd).unwrap();
        assert_eq!(head.status, 206);
        let mut body = Vec::new();
        http::copy_body(&mut rd, &mut body, head.framing("GET").unwrap(), u64::MAX).unwrap();
        assert_eq!(body, &blob[a as usize..=b as usize]);
    }
    // As an HTTP_PROXY: an absolute-form request goes to the registry too.
    write!(
        s,
        "GET http://{}/v2/demo/app/blobs/{} HTTP/1.1\r\nHost: {}\r\nRange: bytes=7-9\r\n\r\n",
        reg.host(),
        layer.digest,
        reg.host()
    )
    .unwrap();
    let head = http::read_response_head(&mut rd).unwrap();
    let mut body = Vec::new();
    http::copy_body(&mut rd, &mut body, head.framing("GET").unwrap(), u64::MAX).unwrap();
    assert_eq!((head.status, &body[..]), (206, &blob[7..10]));
    drop(s);

    // The proxy counts what the registry itself logged.
    let at_proxy = proxy.blob_served(&layer.digest);
    assert_eq!(at_proxy, (4, 100_000 + 1000 + 100 + 3));
    let after = reg.blob_served(&layer.digest);
    assert_eq!((after.0 - before.0, after.1 - before.1), at_proxy);
    assert!(proxy.log().iter().all(|s| s.fault.is_none()));
}

#[test]
fn faults_hit_the_next_matching_requests_only() {
    let Some(reg) = Registry::plain("fixture_fault_proxy/faults") else {
        return;
    };
    let (layout, image) = pushed(&reg, reg.dir()).unwrap();
    let proxy = FaultProxy::in_front_of(&reg);
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);
    let url = blob_url(&proxy.url(), &layer.digest);
    let range = [("Range", "bytes=0-65535")];
    let manifest = format!("{}/v2/demo/app/manifests/v1", proxy.url());
    let ok = |r: &http::Response| r.status == 206 && r.body == blob[..65536];

    // 429 twice for blobs; a manifest request in between is not a blob and passes.
    proxy.inject(
        Match::Blobs,
        Fault::Status {
            status: 429,
            retry_after: Some(2),
        },
        2,
    );
    assert_eq!(
        http::get(&manifest, &[("Accept", media::MANIFEST)])
            .unwrap()
            .status,
        200
    );
    for _ in 0..2 {
        let r = http::get(&url, &range).unwrap();
        assert_eq!((r.status, r.header("retry-after")), (429, Some("2")));
    }
    assert!(ok(&http::get(&url, &range).unwrap()));
    assert_eq!(proxy.pending_faults(), 0);

    // 503 with Retry-After, for this one blob only.
    proxy.inject(
        Match::Blob(layer.digest.clone()),
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        },
        1,
    );
    let other = blob_url(&proxy.url(), &image.layers[1].digest);
    assert_eq!(http::get(&other, &[]).unwrap().status, 200);
    let r = http::get(&url, &range).unwrap();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("1")));
    assert!(ok(&http::get(&url, &range).unwrap()));

    // A reset: no response at all.
    proxy.inject(Match::Blobs, Fault::Reset, 1);
    let e = http::get(&url, &range).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{e:?}"
    );
    assert!(ok(&http::get(&url, &range).unwrap()));

    // A body cut short: the head promises 65536 bytes, 1000 arrive, then EOF.
    proxy.inject(Match::Blobs, Fault::CutShort { after: 1000 }, 1);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v2/demo/app/blobs/{} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-65535\r\n\r\n",
        layer.digest
    )
    .unwrap();
    let mut rd = BufReader::new(s);
    let head = http::read_response_head(&mut rd).unwrap();
    assert_eq!(
        (head.status, head.header("content-length")),
        (206, Some("65536"))
    );
    let mut body = Vec::new();
    rd.read_to_end(&mut body).unwrap();
    assert_eq!(body, &blob[..1000]);
    assert!(ok(&http::get(&url, &range).unwrap()));

    // A range request answered 200 with the whole blob.
    proxy.inject(Match::Blobs, Fault::IgnoreRange, 1);
    let r = http::get(&url, &range).unwrap();
    assert_eq!((r.status, r.body.len()), (200, blob.len()));
    assert!(r.body == blob);
    assert!(ok(&http::get(&url, &range).unwrap()));

    // An extra delay for one request.
    proxy.inject(Match::Blobs, Fault::Delay(Duration::from_millis(400)), 1);
    let t = Instant::now();
    assert!(ok(&http::get(&url, &range).unwrap()));
    assert!(t.elapsed() >= Duration::from_millis(400));

    // 401 in front of an anonymous registry: the proxy's own Basic challenge, once.
    proxy.inject(Match::Manifests, Fault::Unauthorized, 1);
    let r = http::get(&manifest, &[("Accept", media::MANIFEST)]).unwrap();
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, Some("Basic realm=\"fault-proxy\""))
    );
    assert_eq!(
        http::get(&manifest, &[("Accept", media::MANIFEST)])
            .unwrap()
            .status,
        200
    );

    // The log names each fault once, in order.
    let faults: Vec<Fault> = proxy.log().into_iter().filter_map(|s| s.fault).collect();
    assert_eq!(faults.len(), 2 + 1 + 1 + 1 + 1 + 1 + 1, "{faults:?}");
}

#[test]
fn redirect_host_sees_no_token_and_401_is_the_registrys() {
    let Some(reg) = Registry::token("fixture_fault_proxy/redirect") else {
        return;
    };
    let (layout, image) = pushed(&reg, reg.dir()).unwrap();
    let proxy = FaultProxy::in_front_of(&reg);
    let ts = reg.token_server().unwrap();
    let (user, password) = reg.credentials().unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let t = http::get(
        &format!(
            "{}?service={}&scope={}",
            ts.realm(),
            tests::token_server::SERVICE,
            http::percent_encode("repository:demo/app:pull")
        ),
        &[("Authorization", &basic)],
    )
    .unwrap();
    let token: serde_json::Value = serde_json::from_slice(&t.body).unwrap();
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);

    // The redirect: a 307 to the blob host, which serves the range without a token from us.
    proxy.inject(Match::Blobs, Fault::Redirect, 1);
    let url = blob_url(&proxy.url(), &layer.digest);
    let r = http::get(
        &url,
        &[("Authorization", &bearer), ("Range", "bytes=10-2057")],
    )
    .unwrap();
    assert_eq!(r.status, 307);
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with(&proxy.blob_host().url()), "{location}");
    let r = http::get(&location, &[("Range", "bytes=10-2057")]).unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &blob[10..2058]);
    // A client that leaks the token is seen leaking it.
    let r = http::get(
        &location,
        &[("Authorization", &bearer), ("Range", "bytes=0-9")],
    )
    .unwrap();
    assert_eq!(r.body, &blob[..10]);
    let hits = proxy.host_log();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].authorization, None);
    assert_eq!(hits[1].authorization.as_deref(), Some(bearer.as_str()));
    assert_eq!(proxy.blob_served(&layer.digest), (2, 2048 + 10));
    // Only one redirect was asked for.
    assert_eq!(
        http::get(&url, &[("Authorization", &bearer), ("Range", "bytes=0-9")])
            .unwrap()
            .status,
        206
    );

    // 401 on a valid token: the registry's own challenge; the next request passes.
    proxy.inject(Match::Manifests, Fault::Unauthorized, 1);
    let manifest = format!("{}/v2/demo/app/manifests/v1", proxy.url());
    let h = [
        ("Authorization", bearer.as_str()),
        ("Accept", media::MANIFEST),
    ];
    let r = http::get(&manifest, &h).unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with(&format!("Bearer realm=\"{}\"", ts.realm())),
        "{:?}",
        r.headers
    );
    let r = http::get(&manifest, &h).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, layout.read_blob(&image.manifest.digest));
}

#[test]
fn latency_and_bandwidth_pace_the_link() {
    let Some(reg) = Registry::plain("fixture_fault_proxy/pace") else {
        return;
    };
    let (layout, image) = pushed(&reg, reg.dir()).unwrap();
    let proxy = FaultProxy::in_front_of(&reg);
    let layer = &image.layers[0];
    let blob = layout.read_blob(&layer.digest);
    let url = blob_url(&proxy.url(), &layer.digest);

    // 100 ms per request and per new connection: three one-shot GETs cost ≥ 600 ms.
    proxy.set_latency(Duration::from_millis(100));
    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            http::get(&url, &[("Range", "bytes=0-0")]).unwrap().status,
            206
        );
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(600), "{took:?}");
    proxy.set_latency(Duration::ZERO);

    // 4 MB/s with a 256 KiB burst: 1 MB takes ≥ 184 ms, and the link is shared by two
    // parallel connections (2 MB: ≥ 434 ms).
    assert!(blob.len() >= 1 << 20);
    proxy.set_bandwidth(Some(4_000_000));
    let t = Instant::now();
    let r = http::get(&url, &[("Range", "bytes=0-999999")]).unwrap();
    let one = t.elapsed();
    assert_eq!(r.body, &blob[..1_000_000]);
    assert!(one >= Duration::from_millis(180), "{one:?}");
    let t = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || http::get(&url, &[("Range", "bytes=0-999999")]).unwrap())
        })
        .collect();
    for th in threads {
        assert_eq!(th.join().unwrap().body.len(), 1_000_000);
    }
    let two = t.elapsed();
    assert!(two >= Duration::from_millis(430), "{two:?}");
    println!(
        "latency 100 ms: 3 GETs in {took:?}; 4 MB/s link: 1 MB in {one:?} ({:.2} MB/s), \
         2 x 1 MB in parallel in {two:?} ({:.2} MB/s)",
        1.0 / one.as_secs_f64(),
        2.0 / two.as_secs_f64()
    );
}
