#!/usr/bin/env bash
# Session 37 run 1: GPU tests touching the change; generate() A/B in one process; the op's dispatcher cost.
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -n 8 tests/test_ops.py tests/test_tensor.py tests/test_compile.py tests/test_transformers.py -k "cuda or gpu" -p no:cacheprovider --tb=short -q -rfE > $OUT/tests.log 2>&1; echo "tests rc $?"
tail -n 4 $OUT/tests.log
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -n 8 -m gpu tests/test_kernels.py tests/test_transformers.py -k "eager or graph or compile or generate or decoder" -p no:cacheprovider --tb=short -q -rfE > $OUT/tests_gpu.log 2>&1; echo "gpu tests rc $?"
tail -n 4 $OUT/tests_gpu.log
timeout 300 python3 .diag/s37/gen_ab.py > $OUT/gen_ab.log 2>&1; echo "gen rc $?"; grep -v Warn $OUT/gen_ab.log | tail -30
