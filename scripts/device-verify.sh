#!/usr/bin/env bash
# The release check of one device call (~6 min on an H200): every suite on sm_90, the suites
# whose kernels or launch code changed on sm_89 (ARCH89 substrings), the sm_120 ptxas check, and
# the matvec and layer GPU benches. Needs target/gpu-bundle.tar.xz
# (cargo xtask test-gpu --arch sm_90 --bundle target/gpu-bundle). Logs come back in $OUT/logs.tgz.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar -C /tmp -xJf target/gpu-bundle.tar.xz
B=/tmp/gpu-bundle; cd $B
export QMOE_LAYER_DUMP=${QMOE_LAYER_DUMP:-/tmp/layer-dump}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
bash run.sh --arch sm_90 --timeout 300 2>&1 | sed -n '/^summary/,$p'
for f in ${ARCH89:-matvec router layer gpu.test}; do
  bash run.sh --arch sm_89 --filter "$f" --timeout 300 2>&1 | sed -n '/^summary/,$p' | tail -n +3
done
bash run.sh --arch sm_120 2>&1 | tail -1
export QMOE_PTX_ARCH=sm_90
for b in ${BENCHES:-qmoe-matvec layer}; do
  timeout 200 benches/*.bench.$b --bench --noplot nomatch > "$OUT/bench_$b.log" 2>&1; echo "== bench $b rc=$?"
done
tar -C "$OUT" -czf "$OUT/logs.tgz" logs 2>/dev/null; rm -rf "$OUT/logs"
