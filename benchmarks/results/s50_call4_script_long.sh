#!/usr/bin/env bash
# Session 50, call 4 (one call for what is left of the device time; each part by priority, within 585 s):
# 1. the GPU tests of the GEMV (the paired row sums' PTX); 2. ab_trees.sh: this tree against .diag/head (223d555:
# the new tuner, no paired row sums); 3. diag_tuner.py in this tree, then in .diag/base (9dfd8ca: the old tuner).
cd "$(dirname "$0")/../.."
here=$PWD; work=$OUT/work; mkdir -p $work; cp .diag/s50/run3.sh $work/run3_script.sh
deadline=${1:-585}  # seconds from the start this script must end within (the call's limit, less the tar)
left() { echo $((deadline - SECONDS)); }
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q \
  -k "row_pairs or poisoned or warp_partials or two_streams or gemv" > $work/gpu_gemv_tests.log 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -3 $work/gpu_gemv_tests.log
OUT=$work/ab timeout $(( $(left) - 60 )) bash benchmarks/ab_trees.sh .diag/head 1
echo "ab rc $? at ${SECONDS}s"
for tree in this base; do
  dir=$here; [ $tree = base ] && dir=$here/.diag/base
  t=$(( $(left) - 10 )); [ $t -lt 30 ] && break
  (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_diag_$tree PYTHONPATH=/tmp/site:$dir timeout $t python3 \
     $here/benchmarks/diag_tuner.py --trials 3 --idle 0.3 --json $work/diag_tuner_$tree.json \
     > $work/diag_tuner_$tree.log 2>&1; echo "diag $tree rc $? at ${SECONDS}s")
  grep -E "picked|best|q[45] \(" $work/diag_tuner_$tree.log | cut -c1-200
done
cd $OUT && tar czf run3_logs.tgz work && rm -rf work
