#!/usr/bin/env bash
# Session 42, call 6: the GPU tests of what changed after run 3 (the compiled GEMV's tests, GraphDecoder's).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 240 python3 -m pytest -m gpu -n 8 tests/test_compiled_gemv.py tests/test_transformers.py -p no:cacheprovider --tb=short -rA -q > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"; grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | grep -v "^PASSED" | tail -15
