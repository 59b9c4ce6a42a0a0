#!/usr/bin/env bash
# Session 48, call 1: the GPU tests on session 47's changes (the M = 2 tuner change, the cache fixes, env_flag,
# the compiled-GEMV test forcing eager's GEMV at M = 2), none of which ran the whole suite on a GPU.
cd "$(dirname "$0")/../.."
t0=$SECONDS
OMP_NUM_THREADS=2 timeout $1 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_gpu.log 2>&1
echo "gpu suite rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|error" $OUT/tests_gpu.log | tail -8
