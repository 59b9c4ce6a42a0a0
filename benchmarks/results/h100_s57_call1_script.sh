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
