# Session 33 run 1: wsrs's L2 prefetch of its first blocks before griddepcontrol.wait (GPU tests, then
# benchmarks/diag_prefetch.py: path with and without it, and the FWHT's share of the path).
set -x
date -u
OMP_NUM_THREADS=2 timeout 300 python3 -m pytest -q -n 4 tests/test_kernels.py -p no:cacheprovider --tb=short -rA \
  -k "weight_written_late or dependent_launch_waits or ws_rs_poisoned or ws_rs_split_k_sum or compiles_for_sm90" 2>&1 | tail -40 | tee $OUT/tests.log
date -u
cd benchmarks && timeout 400 python3 diag_prefetch.py --shapes 1024x4096 4096x4096 14336x4096 4096x14336 --bits 5 --m 4 16 64 --json $OUT/prefetch.json 2>&1 | grep -v Warning | tee $OUT/prefetch.log
date -u
