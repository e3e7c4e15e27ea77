#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/packages.txt, as root),
# finds the test kernels and image tools (scripts/env.sh), then runs every test of the
# workspace, going on past a failing test binary so one failure hides no other.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p tests --test vm_smoke`).
set -euo pipefail
. "$(dirname "$0")/env.sh"
erofs_setup
cd "$EROFS_ROOT"
if [ $# -eq 0 ]; then
    set -- --workspace --all-features
fi
exec cargo test --no-fail-fast "$@"
