#!/usr/bin/env bash
# Builds the whole test environment when no ready-made copy (../shared) is at hand:
# target/testenv/vm/linux-{6.12,7.2}.bzImage and target/testenv/tools/bin/ (erofs-utils,
# nydus-image), where scripts/env.sh looks after $EROFS_SHARED_DIR and ../shared.
# As root; about 45 minutes on a busy 2-core machine (each kernel ~15, the tools ~13).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../target/testenv}
"$here/build-kernel.sh" 6.12 "$out/vm"
"$here/build-kernel.sh" 7.2 "$out/vm"
"$here/build-tools.sh" "$out/tools/bin"
echo "test environment ready in $(cd "$out" && pwd)"
