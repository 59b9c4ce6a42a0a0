#!/usr/bin/env bash
# Session 34 run 3: host time of an eager HLWQ linear layer by layer and piece by piece, with launch.launch's direct
# launches and without (--triton-launch); then the GPU tests of the kernels it launches.
cd "$(dirname "$0")/../.."
timeout 150 python3 benchmarks/profile_launch.py --m 1 16 128 --triton-launch > $OUT/launch_triton.log 2>&1; echo "rc $?"
timeout 150 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_direct.log 2>&1; echo "rc $?"
paste <(grep -v Warn $OUT/launch_triton.log) <(grep -v Warn $OUT/launch_direct.log | sed 's/^ *//') | cut -c1-150
OMP_NUM_THREADS=2 timeout 330 python3 -m pytest -m gpu -n 8 tests/test_kernels.py tests/test_launch.py -p no:cacheprovider --tb=short -q -k "gemv or fwht or ws_rs or wsrs or split or graph or dependent or launch" > $OUT/tests.log 2>&1; echo "tests rc $?"
tail -5 $OUT/tests.log
