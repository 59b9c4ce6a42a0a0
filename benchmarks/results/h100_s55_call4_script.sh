#!/usr/bin/env bash
# Session 55, call 4: results/h100_s55_call4_determinism.py (a fresh machine). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s55_call4_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s55_call4_script.sh benchmarks/results/h100_s55_call4_determinism.py "$OUT/"
timeout 420 python3 benchmarks/results/h100_s55_call4_determinism.py "$OUT/determinism.json" > "$OUT/determinism.log" 2>&1
echo "rc $? at ${SECONDS}s"; grep "^{" "$OUT/determinism.log"; tail -3 "$OUT/determinism.log"
