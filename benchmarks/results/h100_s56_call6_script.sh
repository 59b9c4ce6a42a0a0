#!/usr/bin/env bash
# Session 56, call 6: benchmarks/diag_prefill.py (the prompt's forward eager against compiled), Q5 then bf16, in the
# device time left. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call6_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call6_script.sh "$OUT/"
timeout 170 python3 benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --reps 10 --json "$OUT/prefill.json" \
  > "$OUT/prefill.log" 2>&1
echo "rc $? at ${SECONDS}s"; grep "^{" "$OUT/prefill.log"; tail -2 "$OUT/prefill.log"
