# Session 62, call 1 (NOTES 62): the GEMV beside the tensor-core kernels at M = 4 and 8 on small layers (the tuner's
# pick against each family forced), then the decode at batch 8, the CUDA-graph way: the Qwen3.5-9B shape (bf16, Q5)
# and the Llama-3-8B shape (Q5, bf16), on the tree before hlwq.linear_siblings (its hlwq_ops/ checked out from the
# commit before it). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call1_script.sh
set -x
timeout 150 python3 benchmarks/bench_ops.py --m 4 8 --shapes 32x4096 1024x4096 --paths --no-int4 \
  --json "$OUT/ops_small.json" --plot "$OUT/ops_small.png" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -30
timeout 230 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 8 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -12
timeout 170 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_llama_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -12
