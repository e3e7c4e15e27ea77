//! Cold sequential read throughput of a 256 MiB blob from Debian's `docker-registry`
//! through an emulated WAN link (the fault proxy with 20 ms latency per request and a
//! 200 Mbit/s link shared by all connections: `tests::fault_proxy`), as a fraction of the
//! link's bandwidth, for several ways of reading:
//!
//! * `oci-lazy` reads of 32 MiB windows (`Blob::read_exact_at`: split into 4 MiB range
//!   requests, 8 in flight) — the parallel range requests;
//! * the same windows with one request in flight (`Config::parallel = 1`);
//! * 1 MiB reads one after another, one request each (a client that fetches exactly each
//!   READ it is asked for, as erofs-utils' `oci` backend does) — the peer.
//!
//! ```text
//! cargo bench -p tests --bench registry_throughput
//! ```
//!
//! Settings: `REGISTRY_BENCH_MIB` (default 256), `REGISTRY_BENCH_RTT_MS` (20),
//! `REGISTRY_BENCH_MBIT` (200). Every byte read is checked against the blob's digest.

use std::time::{Duration, Instant};

use oci_lazy::{Client, Config, Digest, Hasher, Reference};
use tests::fault_proxy::FaultProxy;
use tests::oci_layout::{OciLayout, Platform};
use tests::registry::Registry;
use tests::skopeo::Skopeo;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mib = env("REGISTRY_BENCH_MIB", 256);
    let rtt = Duration::from_millis(env("REGISTRY_BENCH_RTT_MS", 20));
    let mbit = env("REGISTRY_BENCH_MBIT", 200);
    let bytes_per_sec = mbit * 1_000_000 / 8;
    let reg = Registry::plain("registry_bench")
        .expect("docker-registry (apt-get install docker-registry)");
    let skopeo = Skopeo::new(&reg.dir().join("skopeo")).expect("skopeo");
    // The blob: pseudo-random bytes (incompressible), pushed by skopeo as a layer.
    let layout = OciLayout::create(&reg.dir().join("layout"));
    let mut data = vec![0u8; (mib << 20) as usize];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for c in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    let layer = layout.add_blob("application/octet-stream", &data);
    drop(data);
    let config = layout.add_config(&Platform::host(), std::slice::from_ref(&layer.digest));
    let manifest = layout.add_manifest(&config, std::slice::from_ref(&layer), &Default::default());
    layout.tag("v1", &manifest);
    skopeo.push(layout.dir(), "v1", &reg, "bench/blob:v1");
    let digest: Digest = layer.digest.parse().unwrap();

    let link = FaultProxy::in_front_of(&reg);
    link.set_latency(rtt);
    link.set_bandwidth(Some(bytes_per_sec));
    let reference: Reference = link.reference("bench/blob:v1").parse().unwrap();
    println!(
        "registry_throughput: {mib} MiB blob, link {} ms RTT, {mbit} Mbit/s ({:.1} MB/s)",
        rtt.as_millis(),
        bytes_per_sec as f64 / 1e6
    );
    let size = layer.size;
    let mut rows = Vec::new();
    for (name, parallel, window) in [
        (
            "oci-lazy, 32 MiB windows, 8 parallel 4 MiB ranges",
            8usize,
            32usize << 20,
        ),
        ("oci-lazy, 32 MiB windows, 1 request in flight", 1, 32 << 20),
        ("peer: 1 MiB reads, one request each", 1, 1 << 20),
    ] {
        let mut cfg = Config::default();
        cfg.proxy_from_env = false;
        cfg.parallel = parallel;
        let client = Client::new(cfg).unwrap();
        let blob = client.blob(reference.repository(), &digest).unwrap();
        assert_eq!(blob.size(), size);
        let before = link.total_bytes();
        let mut buf = vec![0u8; window];
        let mut h = Hasher::new(digest.algorithm());
        let mut fetch = Duration::ZERO;
        let mut off = 0u64;
        while off < size {
            let n = window.min((size - off) as usize);
            let t = Instant::now();
            blob.read_exact_at(&mut buf[..n], off).unwrap();
            fetch += t.elapsed();
            h.update(&buf[..n]);
            off += n as u64;
        }
        h.check(&digest, || name.to_string())
            .expect("the bytes read are the blob's");
        let mbps = size as f64 / fetch.as_secs_f64();
        let fraction = mbps / bytes_per_sec as f64;
        let s = client.stats();
        println!(
            "  {name:<52} {:>7.2} s {:>7.1} MB/s  {:.3} of the link  ({} requests, {} body bytes over the link)",
            fetch.as_secs_f64(),
            mbps / 1e6,
            fraction,
            s.requests,
            link.total_bytes() - before
        );
        rows.push(fraction);
    }
    println!(
        "registry_throughput: parallel ranges reach {:.3} of the link ({:.2}x the one-request-per-read peer); goal >= 0.8",
        rows[0],
        rows[0] / rows[2]
    );
}
