#!/usr/bin/env bash
# Session 54, call 5: results/s54_call5_determinism.py. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/s54_call5_script.sh
cd "$(dirname "$0")/.."
cp results/s54_call5_determinism.py "$0" "$OUT/"
timeout 280 python3 results/s54_call5_determinism.py > $OUT/determinism.log 2>&1
echo "rc $? at ${SECONDS}s"; grep -E "^(op|prompt|tokens|run)" $OUT/determinism.log
