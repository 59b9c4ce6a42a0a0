#!/usr/bin/env bash
# Session 55, call 2 (benchmarks/NOTES.md, session 55), on call 1's machine while warm (its tuning cache kept): the
# grouped and ungrouped step again, now with every key tuned before round 1; then the batch-1 decode table the
# CUDA-graph way (bf16, int4, HLWQ Q5 with GraphDecoder's default grouping), one process per method. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s55_call2_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s55_call2_script.sh "$OUT/"
timeout 200 python3 benchmarks/diag_grouped.py --rounds 2 --json "$OUT/diag_grouped.json" > "$OUT/diag_grouped.log" 2>&1
echo "diag rc $? at ${SECONDS}s"; grep "^{" "$OUT/diag_grouped.log"
for m in bf16 int4 hlwq-q5; do
  timeout 130 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods $m \
    --json "$OUT/decode_$m.json" > "$OUT/decode_$m.log" 2>&1; echo "$m rc $? at ${SECONDS}s"; grep "^{" "$OUT/decode_$m.log"
done
