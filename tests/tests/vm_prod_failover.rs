//! Failover in the 6.12 VM: `erofs-ondemand hold` keeps the `/dev/cachefiles` fd; a daemon
//! started with `serve --supervisor` hands it over after binding. While two readers stream
//! large files from a mount, the daemon is killed with SIGKILL three times in a row, each time
//! replaced by a successor that takes the fd from the holder and sends `restore`. The readers
//! finish with no error and the right bytes; the successors re-open the objects the dead
//! daemons had (the kernel's re-open after their fds closed) and serve the re-sent READs.

mod vm_prod_common;

use std::time::{Duration, Instant};

use tests::vm::{Kernel, VmRun, noise};
use tests::{require_tool, scratch_dir};
use vm_prod_common::{PRELUDE, chunked, daemon, sha256};

const SCRIPT: &str = r#"
mkdir -p /data/cache
H=/run/holder.sock
erofs-ondemand hold --socket $H >/tmp/hold.log 2>&1 &
HPID=$!
check holder-up wait_for 5 test -S $H
start_daemon /tmp/d0.log fo --cache-dir /data/cache --supervisor $H --readahead 0 || exit 1
# The daemon logs the handover after the cache shows bound (what start_daemon waits for).
check handed-over wait_for 10 grep -q "handed the device fd to the holder" /tmp/d0.log
od_mount img /mnt/img
# reader FILE: read FILE 1 MiB at a time with short pauses (so the readers outlast three
# kills), piping the bytes to sha256sum; /tmp/rc.FILE gets 0, or the failing dd's status.
reader() {
    (
        _i=0
        while [ $_i -lt 48 ]; do
            dd if=/mnt/img/$1 bs=1M skip=$_i count=1 2>>/tmp/err.$1 || { echo "dd $_i: $?" >/tmp/rc.$1; exit 1; }
            _i=$((_i + 1))
            sleep 0.02
        done
    ) | sha256sum >/tmp/sum.$1
    [ -e /tmp/rc.$1 ] || echo 0 >/tmp/rc.$1
}
reader a &
reader b &
for round in 1 2 3; do
    sleep 0.6
    _running=0
    for f in a b; do [ -e /tmp/rc.$f ] || _running=$((_running + 1)); done
    data running_at_kill_$round $_running
    kill -9 $DPID
    wait $DPID 2>/dev/null
    DLOG=/tmp/d$round.log
    erofs-ondemand serve --blob-dir $B --cache-dir /data/cache --tag fo --supervisor $H --readahead 0 >$DLOG 2>&1 &
    DPID=$!
    check takeover-$round wait_for 10 grep -q "took over the cache" $DLOG
done
check readers-done wait_for 120 sh -c "test -e /tmp/rc.a && test -e /tmp/rc.b"
for f in a b; do
    check reader-$f-ok test "$(cat /tmp/rc.$f)" = 0
    check reader-$f-bytes grep -q "$(cat /vmtest/$f.sha256)" /tmp/sum.$f
    echo "reader $f errors:"; cat /tmp/err.$f | grep -v records | head -5
done
# The mount keeps working: a whole read after the last takeover.
check read-after sh -c "sha256sum /mnt/img/c | grep -q $(cat /vmtest/c.sha256)"
for r in 1 2 3; do
    data reopens_$r "$(grep -c 'OPEN object' /tmp/d$r.log)"
done
umount /mnt/img
stop_daemon daemon-exit
data last_summary "$(summary $DLOG)"
kill -TERM $HPID
wait $HPID
check holder-exit test $? = 0
cat /tmp/hold.log
"#;

#[test]
fn readers_survive_three_kills() {
    let Some(mkfs_erofs) = require_tool("mkfs.erofs") else {
        return;
    };
    let daemon = daemon();
    let dir = scratch_dir("vm_prod/failover");
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    let mut sums = Vec::new();
    for (i, (name, len)) in [("a", 48 << 20), ("b", 48 << 20), ("c", 4 << 20)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(tree.join(name), noise(101 + 2 * i as u64, len)).expect("write");
        sums.push((name, sha256(&tree.join(name))));
    }
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    chunked(&mkfs_erofs, &blobs, &tree, "img", "imgblob", 1 << 20);
    std::fs::remove_dir_all(&tree).expect("remove tree");

    let start = Instant::now();
    let mut vm = VmRun::new("prod-failover")
        .kernel(Kernel::V6_12)
        .file("bin/erofs-ondemand", &daemon)
        .disk_file("blobs", &blobs)
        .disk_size(512 << 20)
        .script(&format!("{PRELUDE}{SCRIPT}"))
        .timeout(Duration::from_secs(240));
    for (name, sum) in &sums {
        vm = vm.bytes(&format!("vmtest/{name}.sha256"), sum.as_bytes(), 0o644);
    }
    let Some(out) = vm.run() else {
        return;
    };
    out.assert_passed(&[
        "holder-up",
        "daemon-fo",
        "handed-over",
        "mount-img",
        "takeover-1",
        "takeover-2",
        "takeover-3",
        "readers-done",
        "reader-a-ok",
        "reader-a-bytes",
        "reader-b-ok",
        "reader-b-bytes",
        "read-after",
        "daemon-exit",
        "holder-exit",
    ]);
    let report = out.report();
    // Both readers were mid-stream at the first kill.
    assert_eq!(out.data_u64("running_at_kill_1"), 2, "{report}");
    // The first successor (the readers had most of their files left) got the kernel's re-sent
    // OPEN for the object the dead daemon had; the others are reported.
    let reopens: Vec<u64> = (1..=3)
        .map(|r| out.data_u64(&format!("reopens_{r}")))
        .collect();
    assert!(reopens[0] >= 1, "{reopens:?}\n{report}");
    println!(
        "vm_prod_failover: {} checks, VM {:.1?} ({}), whole test {:.1?}; readers running at the kills: {}/{}/{}; OPENs re-sent to each successor: {reopens:?}; last daemon: {}",
        out.passed.len(),
        out.elapsed,
        out.accel,
        start.elapsed(),
        out.data_u64("running_at_kill_1"),
        out.data_u64("running_at_kill_2"),
        out.data_u64("running_at_kill_3"),
        out.data("last_summary").unwrap_or("?")
    );
}
