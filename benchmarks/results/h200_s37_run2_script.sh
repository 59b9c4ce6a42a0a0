#!/usr/bin/env bash
# Session 37 run 2: generate() A/B in one process (fixed), the op's dispatcher cost; the eager-linear test (fixed)
# and the CUDA cases of test_ops / test_tensor, with durations.
cd "$(dirname "$0")/../.."
timeout 330 python3 .diag/s37/gen_ab.py > $OUT/gen_ab.log 2>&1; echo "gen rc $?"; grep -v Warn $OUT/gen_ab.log | tail -32
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -n 8 tests/test_ops.py tests/test_tensor.py tests/test_kernels.py -k "cuda or gpu_eager_linear" -p no:cacheprovider --tb=short -q -rfE --durations=10 > $OUT/tests.log 2>&1; echo "tests rc $?"
tail -n 16 $OUT/tests.log
