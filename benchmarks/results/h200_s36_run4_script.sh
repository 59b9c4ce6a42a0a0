#!/usr/bin/env bash
# Session 36 run 4: review fixes (DirectLaunch keeps the compiled kernel, KEEP 4096, Tma by isinstance, the GPU test
# against Triton's own launch at two activation addresses); the M = 128 F.linear row re-measured (first and again,
# with and without a garbage collection after the tuning).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m gpu -n 8 tests/test_launch.py tests/test_kernels.py -p no:cacheprovider --tb=short -rA -k "launch or ws_rs or wsrs or gemv or graph" > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/tests.log | tail -6
timeout 60 python3 .diag/s36/profile_launch2.py --m 1 16 128 > $OUT/launch_plain.log 2>&1; echo "rc $?"
GC_AFTER_TUNING=1 timeout 60 python3 .diag/s36/profile_launch2.py --m 1 16 128 > $OUT/launch_gc.log 2>&1; echo "rc $?"
paste <(grep -v Warn $OUT/launch_plain.log) <(grep -v Warn $OUT/launch_gc.log | sed 's/^ *//') | grep -E "M = |F.linear|linear_call|kernels.linear|fwht|ws_rs|gemv " | cut -c1-160
