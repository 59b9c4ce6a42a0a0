#!/usr/bin/env bash
# Session 54, call 5: results/h100_s54_call5_determinism.py. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s54_call5_script.sh
cd "$(dirname "$0")/.."
# (as run, the line below named "$0", not found after the cd: the script did not come back)
cp results/h100_s54_call5_determinism.py results/h100_s54_call5_script.sh "$OUT/"
timeout 280 python3 results/h100_s54_call5_determinism.py > $OUT/determinism.log 2>&1
echo "rc $? at ${SECONDS}s"; grep -E "^(op|prompt|tokens|run)" $OUT/determinism.log
