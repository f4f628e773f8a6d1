#!/usr/bin/env bash
# Output fingerprints before and after a change that must not change results, on one GPU.
#   bash scripts/device-hashes.sh BEFORE_EXE "sm_90 sm_89" "sm_80"
# BEFORE_EXE is the `output_hashes` test executable of the old tree (cargo test -p qmoe-layer
# --release --test output_hashes --no-run, built before the change); the "after" one comes from
# target/gpu-bundle.tar.xz (unpacked to /tmp/gpu-bundle). Both print QMOE-HASH lines for the
# same seeded inputs (crates/qmoe-layer/tests/output_hashes.rs); for each arch of the second
# argument the two lists are diffed. Arches of the third argument run the new build only (a
# target the old tree did not have). Lists land in $OUT/hashes/.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/hashes"
BEFORE=$1; BOTH=${2:-sm_90}; NEW_ONLY=${3:-}
AFTER=/tmp/gpu-bundle/tests/qmoe-layer.test.output_hashes
[ -x "$AFTER" ] || { echo "no $AFTER: unpack target/gpu-bundle.tar.xz into /tmp first" >&2; exit 2; }
run() { QMOE_PTX_ARCH=$2 timeout 300 "$1" --ignored --nocapture --test-threads=1 print_output_hashes 2>&1 | grep QMOE-HASH; }
status=0
for a in $BOTH; do
  run "$BEFORE" "$a" > "$OUT/hashes/before.$a"
  run "$AFTER" "$a" > "$OUT/hashes/after.$a"
  n=$(wc -l < "$OUT/hashes/after.$a")
  d=$(diff "$OUT/hashes/before.$a" "$OUT/hashes/after.$a" | grep -c '^>')
  echo "hashes $a: $n outputs after, $(wc -l < "$OUT/hashes/before.$a") before, $d differ"
  diff "$OUT/hashes/before.$a" "$OUT/hashes/after.$a" | head -20
  [ "$n" -gt 0 ] && [ "$d" -eq 0 ] || status=1
done
for a in $NEW_ONLY; do
  run "$AFTER" "$a" > "$OUT/hashes/after.$a"
  echo "hashes $a (new target): $(wc -l < "$OUT/hashes/after.$a") outputs; vs sm_90: $(diff "$OUT/hashes/after.sm_90" "$OUT/hashes/after.$a" 2>/dev/null | grep -c '^>') differ"
done
exit $status
