#!/usr/bin/env bash
# Session 34 run 7: launch.py restructured (one Triton launch site, run_launcher shared with profile_launch.py).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 250 python3 -m pytest -m gpu -n 8 tests/test_launch.py tests/test_kernels.py -p no:cacheprovider --tb=short -rA -k "launch or gemv or ws_rs or split or dependent" > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED" $OUT/tests.log | tail -4
timeout 60 python3 benchmarks/profile_launch.py --m 1 --calls 100 > $OUT/launch.log 2>&1; echo "rc $?"; grep -v Warn $OUT/launch.log | tail -14
