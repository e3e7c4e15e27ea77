#!/usr/bin/env bash
# Run fuzz targets one after another, each for SECONDS, with the limits the project asks
# for (-timeout=10, -rss_limit_mb=1024), new inputs going to $WORK/<target> (default
# fuzz/work/, ignored by git) and the committed corpus fuzz/corpus/<target> read as seeds.
# Prints libFuzzer's final stats line per target.
#
# Usage: fuzz/run.sh SECONDS [TARGET...]     (default: every target in fuzz/fuzz_targets)
#        cargo +nightly fuzz cmin TARGET fuzz/work/TARGET   then copy into fuzz/corpus/
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:?usage: run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
WORK=${WORK:-$PWD/work}
ARTIFACTS=${ARTIFACTS:-$PWD/artifacts}
mkdir -p "$WORK" "$ARTIFACTS" "$WORK/logs"
nice cargo +nightly fuzz build -O "${targets[@]:0:1}" >/dev/null 2>&1 || true
for t in "${targets[@]}"; do
  mkdir -p "$WORK/$t" "$ARTIFACTS/$t"
  start=$(date -u +%FT%TZ)
  set +e
  nice cargo +nightly fuzz run -O "$t" "$WORK/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$ARTIFACTS/$t/" >"$WORK/logs/$t.log" 2>&1
  rc=$?
  set -e
  runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$WORK/logs/$t.log" | tail -1 || true)
  stats=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$WORK/logs/$t.log" | tail -1 || true)
  crash=$(grep -E 'SUMMARY|panicked at|Test unit written' "$WORK/logs/$t.log" | head -3 | tr '\n' ' ' || true)
  peak=$(grep -Eo 'peak_rss_mb: *[0-9]+' "$WORK/logs/$t.log" | tail -1 || true)
  echo "$t start=$start rc=$rc ${runs:-no-final-line} | ${stats} | ${peak} | ${crash:-no crash}"
done
