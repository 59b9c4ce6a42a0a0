#!/usr/bin/env bash
# Session 36 run 3: the whole GPU suite on the new launch path; the eager prefill old/new launch in one process
# (Q5, and bf16 as the control: no Launch there); profile_launch once more (its recording fixed).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 400 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=8 > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | tail -8
timeout 150 python3 .diag/s36/prefill_ab.py hlwq-q5 bf16 > $OUT/prefill_ab.log 2>&1; echo "rc $?"; grep -v Warn $OUT/prefill_ab.log | tail -3
timeout 60 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_new3.log 2>&1; echo "rc $?"; grep -v Warn $OUT/launch_new3.log | tail -45
