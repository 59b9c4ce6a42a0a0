#!/usr/bin/env bash
# Session 51, one call within $1 s, by priority: 1. the GPU tests of the paired row sums; 2. bench_ops --m 1 in
# .diag/head (HEAD, no paired sums) and this tree; 3. diag_tuner.py on Q5 14336x4096 with HEAD's
# tuner (.diag/head) and 9dfd8ca's (.diag/base); 4. bench_ops again, the trees in the other order. Each tree and
# tool tunes into an empty cache of its own; bench_ops's second round reuses the first round's tiles. 5. The batch-1
# decode step (profile_step.py) in both trees, if time is left.
cd "$(dirname "$0")/../.."
here=$PWD; work=$OUT/work; mkdir -p $work; cp .diag/s51/run1.sh $work/
deadline=${1:-300}
left() { echo $((deadline - SECONDS)); }
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q -rA \
  -k "gemv_row_pairs or poisoned_output_fully_written or two_streams" > $work/gpu_gemv_tests.log 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -3 $work/gpu_gemv_tests.log
run() {  # tree tag seconds args...
  local tree=$1 tag=$2 dir=$here t=$3; shift 3
  [ $tree != this ] && dir=$here/.diag/$tree
  [ $t -gt $(( $(left) - 5 )) ] && t=$(( $(left) - 5 )); [ $t -lt 20 ] && return 1
  (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_${tree}_${tag%%_*} PYTHONPATH=/tmp/site:$dir timeout $t python3 "$@" \
     > $work/${tag}_$tree.log 2>&1; echo "$tag $tree rc $? at ${SECONDS}s")
}
ops() {  # round trees...
  local round=$1; shift
  for tree in "$@"; do
    run $tree ops_$round 120 benchmarks/bench_ops.py --m 1 --no-int4 --shapes 14336x4096 4096x14336 4096x4096 \
      1024x4096 --json $work/ops_${round}_$tree.json --plot /tmp/p.png && grep -E "HLWQ Q. F.linear" $work/ops_${round}_$tree.log
  done
}
ops 1 head this
for tree in head base; do
  run $tree tuner 100 $here/benchmarks/diag_tuner.py --shapes 14336x4096 --bits 5 --trials 4 --idle 0.5 --rounds 2 \
    --json $work/tuner_$tree.json && grep -E "picked" $work/tuner_$tree.log | cut -c1-70
done
ops 2 this head
for tree in head this; do
  run $tree step 150 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 --json $work/step_$tree.json && \
    grep -E "step|^ +(q|k|v|o|gate|up|down) " $work/step_$tree.log
done
cd $OUT && tar czf run1_logs.tgz work && rm -rf work
