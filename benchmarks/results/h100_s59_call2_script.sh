#!/usr/bin/env bash
# Session 59, call 2: the whole GPU suite on this session's code (session 58 ran only its GraphDecoder tests; the
# last whole run was session 56's, on 02d5f29). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s59_call2_script.sh
cd "$(dirname "$0")/../.." || exit 1
OMP_NUM_THREADS=2 timeout -s INT 520 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q \
  --durations=15 > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; grep -E "FAILED|ERROR" "$OUT/gpu_tests.log" | head -30; tail -25 "$OUT/gpu_tests.log"
