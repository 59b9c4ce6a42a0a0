# Session 59, call 1 (NOTES 59): GraphDecoder's GPU tests (the shared pool's among them), the batch-1 decode with
# the prompt eager and replayed (one process), then the host time of the op a compiled graph calls. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s59_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m gpu -n 8 tests -k graph_decoder -p no:cacheprovider -q -rfE --tb=short 2>&1 | tail -60
timeout 230 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph graph-prompt --batches 1 \
  --methods hlwq-q5 bf16 --json "$OUT/decode_ways.json" 2>&1 | tail -30
timeout 100 python3 benchmarks/profile_host.py --m 1 128 --profile linear_inference --top 30 2>&1 | tail -120
