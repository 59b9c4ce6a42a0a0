# Session 32 run 1: the GPU suite on d1a7880 (wsrs's split K summed by the sum kernel at every BM, never GPU-tested
# as shipped), then hlwq.linear's ratios on the four Llama shapes after it.
set -x
date -u
OMP_NUM_THREADS=2 timeout 440 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=12 2>&1 | tail -130 | tee $OUT/gpu_tests.log
date -u
timeout 120 python3 benchmarks/bench_ops.py --m 1 4 16 64 --shapes 4096x4096 1024x4096 --no-int4 --json $OUT/bench.json --plot $OUT/bench.png 2>&1 | grep -v Warning | tee $OUT/bench.log
date -u
