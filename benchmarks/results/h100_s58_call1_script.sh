# Session 58, call 1 (NOTES 58): GraphDecoder's GPU tests, the batch-1 decode with the prompt's graph, then the
# prefill diagnostic (graph replays and the compiled forward's profile). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s58_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -m gpu -n 4 tests -k graph_decoder -p no:cacheprovider -q -rfE --tb=short 2>&1 | tail -60
for m in hlwq-q5 bf16; do
  timeout 140 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph-prompt --batches 1 --methods $m \
    --json "$OUT/decode_$m.json" 2>&1 | tail -30
done
timeout 170 python3 benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --reps 10 --graph --profile "$OUT" \
  --json "$OUT/prefill.json" 2>&1 | tail -40
