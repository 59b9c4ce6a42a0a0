#!/usr/bin/env bash
# Session 45: the GPU tests (sessions 43-45 changed tensor.py, decode.py, seed.py, ops.py; none ran on a GPU since 42).
# Every gpu-marked test, then test_tensor.py whole (its device-parametrized tests run on cuda only here).
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=2
timeout ${1:-400} python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_gpu.log 2>&1
echo "gpu tests rc $?"; tail -25 $OUT/tests_gpu.log
timeout 150 python3 -m pytest -n 4 tests/test_tensor.py -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_tensor.log 2>&1
echo "test_tensor rc $?"; tail -8 $OUT/tests_tensor.log
