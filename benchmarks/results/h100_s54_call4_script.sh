#!/usr/bin/env bash
# Session 54, call 4 (benchmarks/NOTES.md, session 54): the batch-1 decode step with sibling projections stacked
# (benchmarks/diag_stacked.py) against the plain one, one Llama-3-8B-shaped Q5 model. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s54_call4_script.sh
cd "$(dirname "$0")/../.."
cp "$0" "$OUT/"
(cd benchmarks && timeout 450 python3 diag_stacked.py --rounds 2 --json $OUT/diag_stacked.json) \
  > $OUT/diag_stacked.log 2>&1
echo "diag_stacked rc $? at ${SECONDS}s"; grep "^{" $OUT/diag_stacked.log
