# Session 62, call 1 (NOTES 62): the GEMV beside the tensor-core kernels at M = 4 and 8 on small layers (the tuner's
# pick against each family forced), then the Qwen3.5-9B-shaped decode at batch 8, bf16 and Q5, on an H100. Run from
# the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call1_script.sh
set -x
timeout 240 python3 benchmarks/bench_ops.py --m 4 8 --shapes 32x4096 1024x4096 4096x4096 --paths --no-int4 \
  --json "$OUT/ops_small.json" --plot "$OUT/ops_small.png" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
timeout 300 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 8 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -30
