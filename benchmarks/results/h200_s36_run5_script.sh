#!/usr/bin/env bash
# Session 36 run 5: the launch tests on the GPU alone (run 4's selection ran past its 200 s limit with 41 of 42 done).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -m gpu tests/test_launch.py -p no:cacheprovider --tb=short -rA > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "PASSED|FAILED|passed|failed|Error" $OUT/tests.log | tail -8
