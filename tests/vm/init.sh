#!/bin/busybox sh
# /init of the test VM (see tests/src/vm.rs). The kernel runs it as PID 1 from the initramfs.
# It sets up the guest, sources the test script /vmtest/test.sh and powers the VM off.
#
# Results go to the second serial port (/dev/ttyS1, a file on the host) so that kernel messages
# on the console can never tear a result line; they are echoed on the console too.
/bin/busybox mkdir -p /proc /sys /dev /tmp /data /mnt /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# The results port stays open on fd 9 for the whole run: opening and closing the tty for
# every line lost a line now and then.
if [ -c /dev/ttyS1 ]; then
    exec 9>/dev/ttyS1
else
    exec 9>/dev/null
fi

# vmtest_line TEXT: one result line on the results port and on the console.
vmtest_line() {
    echo "$*" >&9
    echo "$*"
}
# pass NAME
pass() { vmtest_line "VMTEST PASS $1"; }
# fail NAME WHY...
fail() {
    _n=$1
    shift
    vmtest_line "VMTEST FAIL $_n: $(echo "$*" | tr '\n' ' ')"
}
# data KEY VALUE
data() { vmtest_line "VMTEST DATA $1=$2"; }
# check NAME CMD...: run CMD, PASS if it exits 0, else FAIL with its status and output.
check() {
    _n=$1
    shift
    if _out=$("$@" 2>&1); then
        pass "$_n"
    else
        fail "$_n" "exit $? from '$*': $_out"
    fi
}
# check_fails NAME CMD...: PASS if CMD exits non-zero (a refusal the test expects).
check_fails() {
    _n=$1
    shift
    if _out=$("$@" 2>&1); then
        fail "$_n" "'$*' succeeded but should have failed: $_out"
    else
        pass "$_n"
    fi
}

# verify_tree NAME DIR: DIR holds the host tree whose manifests the host test put at
# /vmtest/sums (sha256sum of every file) and /vmtest/stats (path, mode, owner, type of every
# entry): checks NAME-sums and NAME-stats.
verify_tree() {
    check "$1-sums" sh -c "cd '$2' && sha256sum -c /vmtest/sums"
    (cd "$2" && find . | sort | while IFS= read -r f; do stat -c '%n %a %u:%g %F' "$f"; done) >/tmp/stats.$$
    check "$1-stats" cmp /tmp/stats.$$ /vmtest/stats
    rm -f /tmp/stats.$$
}

vmtest_line "VMTEST BEGIN kernel=$(uname -r) cpus=$(nproc)"
if [ -b /dev/vda ]; then
    mount -t ext4 /dev/vda /data || fail setup "cannot mount /dev/vda on /data"
fi
cd /vmtest || fail setup "no /vmtest"
# The test script runs in a subshell so that its `exit` still reaches the END line.
(. /vmtest/test.sh)
vmtest_line "VMTEST END rc=$?"
# Closing the port waits until its output has gone out.
exec 9>&-
cd /
sync
umount /data 2>/dev/null
reboot -f
