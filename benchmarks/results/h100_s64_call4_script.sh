# Session 64, call 4 (NOTES 64): the two Bloom GPU tests with their skips moved first (call 1: the prompt-graph one
# failed, its expected tokens' eager step being captured before its skip), then the Llama-3-8B-shaped decode at
# batch 1, the CUDA-graph way, bf16, torchao int4 and Q5 on this tree (issue 4's targets). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s64_call4_script.sh
set -x
OMP_NUM_THREADS=2 timeout 80 python3 -m pytest -m gpu tests/test_transformers.py -k "other_models and bloom" \
  -p no:cacheprovider --tb=short -rfEs -q 2>&1 | tail -8
for method in bf16:90 hlwq-q5:140 int4:110; do
  timeout ${method#*:} python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods ${method%:*} \
    --json "$OUT/decode_llama_b1_${method%:*}.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -2
done
