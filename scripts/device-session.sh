#!/usr/bin/env bash
# One device call: the named suites (SUITES), the GPU benches (BENCHES) and ncu details of kernels
# matching KERNELS, from target/gpu-bundle.tar.xz (cargo xtask test-gpu --arch sm_90 --bundle
# target/gpu-bundle). Usage (device tool, carry the tar): KERNELS="gate_up_swiglu_q4_k_q4_k_c1" bash scripts/device-session.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar -C /tmp -xJf target/gpu-bundle.tar.xz
B=/tmp/gpu-bundle; cd $B
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
export QMOE_LAYER_DUMP=${QMOE_LAYER_DUMP:-/tmp/layer-dump}
for f in ${SUITES:-matvec layer}; do OUT=$OUT bash run.sh --arch sm_90 --filter $f 2>&1 | tail -4; done
export QMOE_PTX_ARCH=sm_90 QMOE_LAYER_DUMP=${QMOE_LAYER_DUMP:-/tmp/layer-dump}
for b in ${BENCHES:-qmoe-matvec layer}; do
  timeout 300 benches/*.bench.$b --bench --noplot nomatch > "$OUT/bench_$b.log" 2>&1; echo "== bench $b rc=$?"
  grep -E "QMOE-BENCH|^\{|us|µs" "$OUT/bench_$b.log" | cut -c1-400 | head -60
done
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
for k in ${KERNELS:-}; do
  timeout 120 "$NCU" --clock-control none --set full -k regex:"$k" -s 6 -c 1 --print-units base \
    --page details --print-details all benches/qmoe-matvec.bench.qmoe-matvec --bench --noplot nomatch > "$OUT/ncu_$k.txt" 2>&1
  [ -n "${SASS:-}" ] && timeout 120 "$NCU" --clock-control none --section SourceCounters -k regex:"$k" -s 6 -c 1 \
    --page source --print-source sass --csv benches/qmoe-matvec.bench.qmoe-matvec --bench --noplot nomatch > "$OUT/sass_$k.csv" 2>&1
  echo "== ncu $k rc=$?"; grep -E "Duration|DRAM Throughput|Issue Slots Busy|Executed Instructions  |Registers Per|Achieved Occupancy|No Eligible" "$OUT/ncu_$k.txt" | head -12
done
tar -C "$OUT" -czf "$OUT/logs.tgz" logs 2>/dev/null; rm -rf "$OUT/logs"
