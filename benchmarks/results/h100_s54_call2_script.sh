#!/usr/bin/env bash
# Session 54, call 2 (benchmarks/NOTES.md, session 54): the issues' target tables again, as session 45's call 1 ran
# them (results/h100_s45_run1_script.sh) -- M = 1 on the six issue-3 shapes, then the batch-1 decode step the
# CUDA-graph way, one process per method. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s54_call2_script.sh
cd "$(dirname "$0")/../.."
cp "$0" "$OUT/"
timeout 300 python3 benchmarks/bench_ops.py --m 1 --json $OUT/ops_m1.json --plot $OUT/ops_m1.png > $OUT/ops_m1.log 2>&1
echo "ops rc $? at ${SECONDS}s"; tail -40 $OUT/ops_m1.log
for m in bf16 int4 hlwq-q5; do
  timeout 150 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods $m \
    --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1; echo "$m rc $? at ${SECONDS}s"; grep "^{" $OUT/decode_$m.log
done
