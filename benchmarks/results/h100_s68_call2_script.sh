# Session 68, call 2 (NOTES 68), on the tree with EARLY offered at Q5 on every shape: the GPU tests that run every
# GEMV candidate (EARLY ones now among them on large weights and groups), bench_ops at M = 1 on the two shapes call 1
# left out, then the Llama-3-8B-shaped decode at batch 1 the CUDA-graph way (issue 4's targets), one process a method.
set -x
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -m gpu tests/test_kernels.py -k "poisoned or every_candidate" -n 8 \
  -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -6
(cd benchmarks && timeout 60 python3 bench_ops.py --m 1 --shapes 4096x12288 1024x4096 \
  --json $OUT/s68_ops_m1_more.json --plot $OUT/s68_ops_m1_more.png 2>&1 | grep -v "Warning\|Configuration class" | tail -16)
for method in bf16:80 hlwq-q5:130 int4:100; do
  timeout ${method#*:} python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods ${method%:*} \
    --json "$OUT/decode_llama_b1_${method%:*}.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -2
done
