# Session 33 run 2: wsrs rotating its activations in the kernel (ROTATE): its GPU test and the ws_rs ones beside it,
# then benchmarks/diag_rotate.py (path, path with two consumer warpgroups, rotate, the kernel alone).
set -x
date -u
OMP_NUM_THREADS=2 timeout 280 python3 -m pytest -q -n 4 tests/test_kernels.py -p no:cacheprovider --tb=short -rA \
  -k "rotating_in_the_kernel or ws_rs_poisoned or compiles_for_sm90 or dependent_launch_waits" 2>&1 | tail -40 | tee $OUT/tests.log
date -u
cd benchmarks && timeout 280 python3 diag_rotate.py --shapes 1024x4096 4096x4096 14336x4096 4096x14336 --bits 5 --m 4 16 64 --json $OUT/rotate.json 2>&1 | grep -v Warning | tee $OUT/rotate.log
date -u
