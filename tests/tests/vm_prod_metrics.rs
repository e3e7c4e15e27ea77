//! `erofs-ondemand serve --metrics PATH` in the 6.12 VM: the Prometheus file is rewritten
//! while the daemon serves, is never seen half-written, and its counters match the workload
//! (the READs the daemon logged, the bytes of the file read, the OPENs and CLOSEs of one
//! mount) and the summary line printed at exit.

mod vm_prod_common;

use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, noise};
use tests::{require_tool, scratch_dir};
use vm_prod_common::{PRELUDE, chunked, daemon, sha256};

const SCRIPT: &str = r#"
mkdir -p /data/cache
RUST_LOG=debug start_daemon /tmp/d.log m1 --cache-dir /data/cache --metrics $M || exit 1
check metrics-written wait_for 5 test -s $M
check metrics-start-at-zero test "$(metric erofs_ondemand_open_requests_total)" = 0
od_mount img /mnt/img
check read-big sh -c "sha256sum /mnt/img/big | grep -q $(cat /vmtest/big.sha256)"
check read-small sh -c "sha256sum /mnt/img/small | grep -q $(cat /vmtest/small.sha256)"
# The file is rewritten at least once a second: wait until it shows every READ logged.
_logged=$(grep -c "READ msg" "$DLOG")
check metrics-catch-up wait_for 3 sh -c "test \"\$(sed -n 's/^erofs_ondemand_read_requests_total //p' $M)\" = $_logged"
data reads_logged "$_logged"
for m in open_requests read_requests close_requests requested_bytes fetched_bytes prefetched_bytes written_bytes errors; do
    data "m_$m" "$(metric erofs_ondemand_${m}_total)"
done
data m_objects "$(metric erofs_ondemand_objects)"
data m_read_buckets "$(grep '^erofs_ondemand_read_duration_seconds_bucket' $M | sed 's/.*le="\([^"]*\)"} /\1=/' | tr '\n' ' ')"
data m_read_count "$(metric erofs_ondemand_read_duration_seconds_count)"
data m_read_inf "$(sed -n 's/^erofs_ondemand_read_duration_seconds_bucket{le="+Inf"} //p' $M)"
# Never torn: a reader always finds the last line of a whole file.
check metrics-never-torn sh -c "for i in \$(seq 400); do tail -n 1 $M | grep -q '^erofs_ondemand_fetch_duration_seconds_count ' || exit 1; done"
umount /mnt/img
check close-counted wait_for 5 sh -c "test \"\$(sed -n 's/^erofs_ondemand_close_requests_total //p' $M)\" = 2"
stop_daemon daemon-exit
data summary "$(summary /tmp/d.log)"
data final_reads "$(metric erofs_ondemand_read_requests_total)"
data final_opens "$(metric erofs_ondemand_open_requests_total)"
data final_closes "$(metric erofs_ondemand_close_requests_total)"
"#;

#[test]
fn metrics_match_the_workload() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_prod/metrics");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let big_len = 8 << 20;
    std::fs::write(tree.join("big"), noise(11, big_len)).expect("write");
    std::fs::write(tree.join("small"), noise(13, 10_000)).expect("write");
    let (big_sum, small_sum) = (sha256(&tree.join("big")), sha256(&tree.join("small")));
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(&mkfs_erofs, &blobs, &tree, "img", "imgblob", 1 << 20);
    let image_len = std::fs::metadata(blobs.join("img")).expect("stat").len();
    let blob_len = std::fs::metadata(blobs.join("imgblob"))
        .expect("stat")
        .len();

    let start = Instant::now();
    let Some(out) = VmRun::new("prod-metrics")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .bytes("vmtest/big.sha256", big_sum.as_bytes(), 0o644)
        .bytes("vmtest/small.sha256", small_sum.as_bytes(), 0o644)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(240))
        .run()
    else {
        return;
    };
    out.assert_passed(&[
        "daemon-m1",
        "metrics-written",
        "metrics-start-at-zero",
        "mount-img",
        "read-big",
        "read-small",
        "metrics-catch-up",
        "metrics-never-torn",
        "close-counted",
        "daemon-exit",
    ]);
    let v = |k: &str| out.data_u64(k);
    let report = out.report();
    // One object for the bootstrap, one for the blob.
    assert_eq!(v("m_open_requests"), 2, "{report}");
    assert_eq!(v("m_objects"), 2, "{report}");
    assert_eq!(v("m_close_requests"), 0, "{report}");
    assert_eq!(v("m_read_requests"), v("reads_logged"), "{report}");
    assert_eq!(v("m_read_count"), v("m_read_requests"), "{report}");
    assert_eq!(v("m_read_inf"), v("m_read_requests"), "{report}");
    // Every byte of the file came through the daemon, and nothing beyond the two objects.
    let fetched = v("m_fetched_bytes");
    assert!(
        fetched >= big_len as u64 && fetched <= image_len + blob_len,
        "fetched {fetched} for a {big_len}-byte file ({image_len} + {blob_len} bytes of objects)\n{report}"
    );
    assert!(
        v("m_requested_bytes") > 0
            && v("m_requested_bytes") <= fetched + 4096 * v("m_read_requests")
    );
    assert!(v("m_written_bytes") >= fetched, "{report}");
    assert_eq!(v("m_prefetched_bytes"), 0, "{report}");
    assert_eq!(v("m_errors"), 0, "{report}");
    // The file's last version agrees with the summary line.
    let summary = out.data("summary").unwrap_or_default().to_string();
    for (field, key) in [
        ("opens", "final_opens"),
        ("reads", "final_reads"),
        ("closes", "final_closes"),
    ] {
        assert!(
            summary.contains(&format!(" {field}={} ", v(key)))
                || summary.contains(&format!(": {field}={} ", v(key))),
            "{field}: summary {summary:?} vs metrics {}\n{report}",
            v(key)
        );
    }
    assert_eq!(v("final_closes"), 2);
    // The READ latency histogram: cumulative buckets `le=count`, ending with +Inf.
    let buckets: Vec<(String, u64)> = out
        .data("m_read_buckets")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|b| b.split_once('='))
        .map(|(le, n)| (le.to_string(), n.parse().expect("a count")))
        .collect();
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(v("m_read_requests")),
        "{report}"
    );
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    let quantile = |q: f64| {
        let rank = (q * v("m_read_requests") as f64).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= rank)
            .map_or("?".to_string(), |b| b.0.clone())
    };
    println!(
        "vm_prod_metrics: {} checks, VM {:.1?} ({}), whole test {:.1?}; {} READs for an 8 MiB file, fetched {} bytes; READ latency p50 <= {} s, p99 <= {} s; {summary}",
        out.passed.len(),
        out.elapsed,
        out.accel,
        start.elapsed(),
        v("m_read_requests"),
        fetched,
        quantile(0.5),
        quantile(0.99),
    );
}
