# Session 64, call 2 (NOTES 64): where Q5's Qwen3.5-9B-shaped decode step goes at batch 8 (session 62's GEMV on the
# small projections, hlwq.linear_siblings), then the Llama-3-8B-shaped decode at batch 8, the CUDA-graph way, with
# this tree's hlwq_ops and bf16. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s64_call2_script.sh
set -x
timeout 290 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 --top 40 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -50
timeout 140 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 --methods hlwq-q5 \
  --json "$OUT/decode_llama_b8_head.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
timeout 110 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 \
  --methods bf16 --json "$OUT/decode_llama_b8_bf16.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
