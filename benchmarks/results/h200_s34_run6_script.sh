#!/usr/bin/env bash
# Session 34 run 6: the review fixes of kernels/launch.py (knobs in the key, pre-run hooks, no None cached) and of
# tests/test_launch.py, with the GEMV/FWHT/wsrs/split-K GPU tests.
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 400 python3 -m pytest -m gpu -n 8 tests/test_launch.py tests/test_kernels.py -p no:cacheprovider --tb=short -rA -k "launch or gemv or fwht or ws_rs or wsrs or split or graph or dependent" > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED" $OUT/tests.log | tail -4
