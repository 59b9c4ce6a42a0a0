# Session 33 run 3: ROTATE with the raw ring as deep as the rotated one and every consumer warp past its MMAs before
# a slot is handed back (the race of run 2); GPU tests, then benchmarks/diag_rotate.py.
set -x
date -u
OMP_NUM_THREADS=2 timeout 250 python3 -m pytest -q -n 6 tests/test_kernels.py -p no:cacheprovider --tb=short -rA \
  -k "rotating_in_the_kernel or ws_rs_poisoned or (dependent_launch_waits and wsrs) or ws_rs_split_k_sum" > $OUT/tests.log 2>&1
tail -25 $OUT/tests.log
date -u
cd benchmarks && timeout 250 python3 diag_rotate.py --shapes 1024x4096 4096x4096 14336x4096 4096x14336 --bits 5 --m 4 16 64 --json $OUT/rotate.json 2>&1 | grep -v Warning | tee $OUT/rotate.log
date -u
