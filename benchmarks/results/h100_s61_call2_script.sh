# Session 61, call 2 (NOTES 61): the Qwen3.5-9B-shaped decode, the CUDA-graph way, batch 1 and 8, bf16, Q5 and Q4 in
# one process, on an H100. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s61_call2_script.sh
set -x
timeout 560 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 1 8 \
  --methods bf16 hlwq-q5 hlwq-q4 --json "$OUT/decode_qwen35.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -60
