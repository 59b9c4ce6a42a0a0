#!/usr/bin/env bash
# Session 46, call 4: every gpu-marked test on the session's tree.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=2
t0=$SECONDS
timeout ${1:-450} python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_gpu.log 2>&1
echo "gpu tests rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|FAILED|ERROR" $OUT/tests_gpu.log | tail -20
