#!/usr/bin/env bash
# Session 47, call 3: the GPU tests (the decode change of session 46 -- GraphDecoder passes position_ids -- never ran
# on a GPU), then test_tensor.py without xdist.
cd "$(dirname "$0")/../.."
t0=$SECONDS
OMP_NUM_THREADS=2 timeout $1 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_gpu.log 2>&1
echo "gpu suite rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|error" $OUT/tests_gpu.log | tail -5
t0=$SECONDS
timeout $2 python3 -m pytest tests/test_tensor.py -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_tensor.log 2>&1
echo "test_tensor rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|error" $OUT/tests_tensor.log | tail -5
