#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
git log --oneline -1 2>/dev/null
OMP_NUM_THREADS=2 timeout 480 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=8 > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc $?"
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tests.log | tail -15
