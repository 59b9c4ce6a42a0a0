# Session 58, call 3 (NOTES 58): the prompt's graph on by default, sharing the step graph's memory pool. GraphDecoder's
# GPU tests, then the batch-1 decode both ways (peak memory: the pool's saving). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/s58_call3.sh
set -x
OMP_NUM_THREADS=2 timeout 130 python3 -m pytest -m gpu -n 4 tests -k graph_decoder -p no:cacheprovider -q -rfE --tb=short 2>&1 | tail -8
timeout 120 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph graph-prompt --batches 1 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_ways.json" 2>&1 | tail -6
