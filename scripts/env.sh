# Sourced by demo.sh, scripts/test.sh and .ci/run: installs the Debian packages of
# scripts/packages.txt that are missing (as root, with apt-get), finds the test environment
# (test kernels, erofs-utils, nydus-image) and exports PATH and EROFS_SHARED_DIR for it.
#
# The test environment is a directory laid out like ../shared: vm/linux-6.12.bzImage,
# vm/linux-7.2.bzImage and tools/bin/{mkfs,fsck,dump}.erofs and nydus-image. It is
# $EROFS_SHARED_DIR if set, else ../shared beside the clone (a ready-made copy), else
# target/testenv, which `scripts/build-testenv.sh` builds from Debian's source packages.
# shellcheck shell=bash

EROFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Install what scripts/packages.txt lists and the machine lacks.
erofs_install_packages() {
    local need=() pkg cmd _
    while read -r pkg cmd _; do
        case $pkg in '' | '#'*) continue ;; esac
        if [ -n "$cmd" ]; then
            command -v "$cmd" >/dev/null 2>&1 && continue
        else
            dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' && continue
        fi
        need+=("$pkg")
    done <"$EROFS_ROOT/scripts/packages.txt"
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${need[*]}" >&2
        echo "run as root, or first: sudo apt-get install ${need[*]}" >&2
        return 1
    fi
    echo "installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# Where the test kernels and image tools are; prints the directory or explains what to run.
erofs_testenv_dir() {
    local d
    for d in ${EROFS_SHARED_DIR:+"$EROFS_SHARED_DIR"} "$EROFS_ROOT/../shared" "$EROFS_ROOT/target/testenv"; do
        if [ -f "$d/vm/linux-6.12.bzImage" ] && [ -f "$d/vm/linux-7.2.bzImage" ] &&
            [ -x "$d/tools/bin/mkfs.erofs" ]; then
            (cd "$d" && pwd)
            return 0
        fi
    done
    cat >&2 <<MSG
no test environment (test kernels and erofs-utils/nydus-image) found in
  ${EROFS_SHARED_DIR:+\$EROFS_SHARED_DIR=$EROFS_SHARED_DIR, }$EROFS_ROOT/../shared or $EROFS_ROOT/target/testenv.
Build it from Debian's source packages (as root; about 45 minutes on 2 cores):
  scripts/build-testenv.sh
or point EROFS_SHARED_DIR at a ready-made copy (a directory with vm/ and tools/bin/).
MSG
    return 1
}

# Everything the demo and the tests need: packages, the test environment, cargo.
erofs_setup() {
    erofs_install_packages || return 1
    command -v cargo >/dev/null || {
        echo "needs cargo: install Rust with https://rustup.rs (the latest stable)" >&2
        return 1
    }
    local env_dir
    env_dir=$(erofs_testenv_dir) || return 1
    export EROFS_SHARED_DIR=$env_dir
    export PATH="$env_dir/tools/bin:$PATH:/usr/sbin:/sbin"
}
