# Session 68, call 6 (NOTES 68): the Qwen3.5-9B-shaped text model's decode at batch 1 the CUDA-graph way, bf16, Q5
# (EARLY offered at Q5, M = 1, on every shape) and torchao int4, one process a method (65b's way).
for method in bf16:100 hlwq-q5:170 int4:100; do
  timeout ${method#*:} python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 1 --methods ${method%:*} \
    --json "$OUT/decode_qwen35_b1_${method%:*}.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -2
done
