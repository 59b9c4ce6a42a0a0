# Session 32 run 4: the wsrs candidates for grids that leave half the SMs idle (twice the split, BM = 32 at BM = 64):
# the GPU tests that run every wsrs candidate, then hlwq.linear on 1024 x 4096 as tuned with them.
set -x
date -u
OMP_NUM_THREADS=2 timeout 220 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA -k "ws_rs_poisoned_output_every_candidate or linear_tuned_tensor_core_choice or ws_rs_split_k_sum_kernel or dependent_launch_waits_for_its_input" 2>&1 | tail -45 | tee $OUT/gpu_wsrs_tests.log
date -u
timeout 90 python3 benchmarks/bench_ops.py --m 4 8 16 32 64 --shapes 1024x4096 --no-int4 --json $OUT/bench.json --plot $OUT/bench.png 2>&1 | grep -v Warning | tee $OUT/bench.log
date -u
