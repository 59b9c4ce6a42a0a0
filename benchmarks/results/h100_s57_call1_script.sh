#!/usr/bin/env bash
# Session 57, call 1: benchmarks/diag_prefill.py with --graph (each forward's CUDA graph replayed: the GPU's time
# alone) and --profile (one compiled forward's profile), Q5 then bf16. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s57_call1_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s57_call1_script.sh "$OUT/"
timeout 540 python3 benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --reps 10 --graph --profile "$OUT" \
  --json "$OUT/prefill.json" > "$OUT/prefill.log" 2>&1
echo "rc $? at ${SECONDS}s"; grep "^{" "$OUT/prefill.log"; tail -3 "$OUT/prefill.log"
for f in "$OUT"/prefill_profile_*.txt; do echo "== $f"; head -40 "$f" | cut -c1-200; done
# then the GPU tests of GraphDecoder (its prompt now captured too)
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m gpu -n 4 tests -k "graph_decoder" -p no:cacheprovider --tb=short -rfE -q \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -15 "$OUT/gpu_tests.log"
