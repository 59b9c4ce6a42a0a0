#!/usr/bin/env bash
# Session 41's GPU plan, call 1 (not run: no machine lent). bash benchmarks/gpu_run.sh bash .diag/s41/run1.sh, carry .whl .diag
# The GPU tests of what sessions 39-41 changed: compiled GEMV, element-dense codes, resolved calls, every wrapper's
# launch through kernels.launch.Launch (test_launch.py whole: its unmarked tests run on CUDA tensors there).
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=2 timeout 400 python3 -m pytest -m gpu -n 8 tests/test_compiled_gemv.py tests/test_kernels.py -p no:cacheprovider --tb=short -q -rfE > $OUT/tests_gpu.log 2>&1; echo "gpu tests rc $?"; tail -20 $OUT/tests_gpu.log
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -n 4 tests/test_launch.py -p no:cacheprovider --tb=short -q -rfE > $OUT/tests_launch.log 2>&1; echo "launch tests rc $?"; tail -20 $OUT/tests_launch.log
