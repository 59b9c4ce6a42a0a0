#!/usr/bin/env bash
# Session 34 run 5: the whole GPU suite with launch.launch.
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 560 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=12 > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tests.log | tail -8
