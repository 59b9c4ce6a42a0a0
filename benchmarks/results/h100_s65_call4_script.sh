# Session 65, call 4 (NOTES 65): Q4 beside call 2's table (the Qwen3.5-9B-shaped decode, the CUDA-graph way, batch
# 1 and 8), on the same H100. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s65_call4_script.sh
set -x
timeout 250 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 1 8 --methods hlwq-q4 \
  --json "$OUT/decode_qwen35_q4.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
