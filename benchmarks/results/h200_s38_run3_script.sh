#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 300 python3 -m pytest -n 8 -m "not gpu" -k cuda tests/test_ops.py tests/test_tensor.py tests/test_compile.py tests/test_transformers.py -p no:cacheprovider --tb=short -q -rfE --durations=8 > $OUT/cuda_cases.log 2>&1; echo "cuda cases rc $?"
tail -n 14 $OUT/cuda_cases.log
