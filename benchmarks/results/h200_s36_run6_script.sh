#!/usr/bin/env bash
# Session 36 run 6: the whole GPU suite on the final library code (1b89fe8).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 330 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=8 > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | tail -8
