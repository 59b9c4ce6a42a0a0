#!/usr/bin/env bash
# Session 56, call 2: the whole GPU suite (session 55's stopped at 190 s with ~16 not run), verbose, with the slowest
# tests' durations. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call2_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call2_script.sh "$OUT/"
OMP_NUM_THREADS=2 timeout -s INT 480 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -v \
  --durations=25 > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; grep -E "FAILED|ERROR" "$OUT/gpu_tests.log" | head -20; tail -32 "$OUT/gpu_tests.log"
