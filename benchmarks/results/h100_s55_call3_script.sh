#!/usr/bin/env bash
# Session 55, call 3: results/h100_s55_call3_determinism.py without tuning, then with (fresh machine). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s55_call3_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s55_call3_script.sh benchmarks/results/h100_s55_call3_determinism.py "$OUT/"
for tune in 0 1; do
  HLWQ_AUTOTUNE=$tune timeout 250 python3 benchmarks/results/h100_s55_call3_determinism.py \
    --json "$OUT/determinism_tune$tune.json" > "$OUT/determinism_tune$tune.log" 2>&1
  echo "tune $tune rc $? at ${SECONDS}s"; grep "^{" "$OUT/determinism_tune$tune.log"; tail -2 "$OUT/determinism_tune$tune.log"
done
