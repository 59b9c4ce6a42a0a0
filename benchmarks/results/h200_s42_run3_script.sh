#!/usr/bin/env bash
# Session 42, call 3: the compiled GEMV routed where AOTAutograd traces: its GPU tests, then diag_compiled_gemv a and b.
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m gpu -n 8 tests/test_compiled_gemv.py -p no:cacheprovider --tb=short -rA -q > $OUT/compiled_tests.log 2>&1; echo "tests rc $?"; grep -E "passed|failed|FAILED|Error" $OUT/compiled_tests.log | grep -v "^PASSED" | tail -15
timeout 70 python3 benchmarks/diag_compiled_gemv.py a > $OUT/diag_a.log 2>&1; echo "a rc $?"; grep -v "Warn\|warn(" $OUT/diag_a.log | tail -8
timeout 240 python3 benchmarks/diag_compiled_gemv.py b > $OUT/diag_b.log 2>&1; echo "b rc $?"; grep -v "Warn\|warn(" $OUT/diag_b.log | tail -14
