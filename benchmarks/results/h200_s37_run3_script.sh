#!/usr/bin/env bash
# Session 37 run 3: determinism probe (F.linear per shape and M, the 8B eager forward); the whole GPU suite.
cd "$(dirname "$0")/../.."
timeout 150 python3 .diag/s37/determinism.py > $OUT/determinism.log 2>&1; echo "det rc $?"; grep -v Warn $OUT/determinism.log | tail -12
OMP_NUM_THREADS=2 timeout 380 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=8 > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | tail -8
