#!/usr/bin/env bash
# Session 52's next call, within $1 s: the GPU test that runs every GEMV candidate (with results/s52_q4_early.patch
# applied here: EARLY offered at Q4 on the small shapes), then ab_trees.sh on the two small shapes against
# .diag/head (HEAD, without the patch), two rounds, no decode step (it runs Q5 only). The JSONs record each row's tile.
cd "$(dirname "$0")/../.."
work=$OUT/work; mkdir -p $work; cp .diag/s52/run1.sh $work/
deadline=${1:-300}
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q -rA \
  -k "poisoned_output_fully_written" > $work/gpu_gemv_tests.log 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -3 $work/gpu_gemv_tests.log
OUT=$work/ab AB_SHAPES="4096x4096 1024x4096" AB_STEP=0 timeout $((deadline - SECONDS - 5)) \
  bash benchmarks/ab_trees.sh .diag/head 2
echo "ab_trees rc $? at ${SECONDS}s"
cd $OUT && tar czf run1_logs.tgz work && rm -rf work
