# Session 61, call 1 (NOTES 61): the GPU tests of test_transformers.py (OPT's new GraphDecoder tests among them),
# then the Llama-3-8B batch-1 decode, the graph way (the attention mask now given to every forward). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s61_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 260 python3 -m pytest -m gpu -n 8 tests/test_transformers.py -p no:cacheprovider -q -rfE \
  --tb=short 2>&1 | tail -80
timeout 230 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_llama.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -30
