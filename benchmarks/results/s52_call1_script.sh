#!/usr/bin/env bash
# Session 52's next call, within $1 s, by priority: 1. the GPU test that runs every GEMV candidate (with
# results/s52_q4_early.patch applied here: EARLY offered at Q4 on the small shapes); 2. bench_ops --m 1 on the two
# small shapes in .diag/head (HEAD, without the patch) and this tree, then again in the other order. Each tree tunes
# into an empty cache of its own; the second round reuses the first's tiles. The JSONs record each row's tile.
cd "$(dirname "$0")/../.."
here=$PWD; work=$OUT/work; mkdir -p $work; cp .diag/s52/run1.sh $work/
deadline=${1:-300}
left() { echo $((deadline - SECONDS)); }
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q -rA \
  -k "poisoned_output_fully_written" > $work/gpu_gemv_tests.log 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -3 $work/gpu_gemv_tests.log
run() {  # tree tag seconds args...
  local tree=$1 tag=$2 dir=$here t=$3; shift 3
  [ $tree != this ] && dir=$here/.diag/$tree
  [ $t -gt $(( $(left) - 5 )) ] && t=$(( $(left) - 5 )); [ $t -lt 20 ] && return 1
  (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_${tree}_${tag%%_*} PYTHONPATH=/tmp/site:$dir timeout $t python3 "$@" \
     > $work/${tag}_$tree.log 2>&1; echo "$tag $tree rc $? at ${SECONDS}s")
}
for round_trees in "1 head this" "2 this head"; do
  set -- $round_trees; round=$1; shift
  for tree in "$@"; do
    run $tree ops_$round 90 benchmarks/bench_ops.py --m 1 --no-int4 --shapes 4096x4096 1024x4096 \
      --json $work/ops_${round}_$tree.json --plot /tmp/p.png && grep -E "HLWQ Q. (F.linear|GEMV)" $work/ops_${round}_$tree.log
  done
done
cd $OUT && tar czf run1_logs.tgz work && rm -rf work
