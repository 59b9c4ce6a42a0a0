#!/usr/bin/env bash
# Session 46, call 2: GPU tests not run since session 45's last changes: test_tensor.py whole without xdist (its
# device-parametrized cases run on cuda here; autocast's among them), then the tuner's one timing stream and
# GraphDecoder's CUDA-graph tests (one warm-up stream per decoder).
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=4
t0=$SECONDS
timeout 280 python3 -m pytest tests/test_tensor.py -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_tensor.log 2>&1
echo "test_tensor rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|FAILED|ERROR" $OUT/tests_tensor.log | tail -15
t0=$SECONDS
timeout 240 python3 -m pytest -m gpu -n 4 tests/test_kernels.py tests/test_transformers.py -p no:cacheprovider --tb=short -rfE -q \
  -k "timings_share_one_stream or graph_decoder or no_host_sync or reduce_overhead or tuning_times" > $OUT/tests_gpu.log 2>&1
echo "gpu tests rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|FAILED|ERROR" $OUT/tests_gpu.log | tail -15
