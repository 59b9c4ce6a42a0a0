#!/usr/bin/env bash
# Session 57, call 2: the batch-1 and batch-8 decode tables the CUDA-graph way with GraphDecoder's prompt now captured
# too (time to first token: the timed call's replay of the prompt's graph), bf16, int4 and HLWQ Q5, one process per
# method. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s57_call2_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s57_call2_script.sh "$OUT/"
for m in bf16 hlwq-q5 int4; do
  timeout 170 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 8 --methods $m \
    --json "$OUT/decode_$m.json" > "$OUT/decode_$m.log" 2>&1; echo "$m rc $? at ${SECONDS}s"; grep "^{" "$OUT/decode_$m.log"
done
