#!/usr/bin/env bash
# Session 50, call 4 (what the device time left allows, by priority, within $1 seconds): 1. the GPU tests of the
# paired row sums; 2. bench_ops --m 1 in .diag/head (223d555) and this tree, alternating, twice; 3. the decode step
# in both, if time is left. Each tree tunes into a cache of its own.
cd "$(dirname "$0")/../.."
here=$PWD; work=$OUT/work; mkdir -p $work; cp .diag/s50/run4.sh $work/run4_script.sh
deadline=${1:-300}
left() { echo $((deadline - SECONDS)); }
OMP_NUM_THREADS=2 timeout 100 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q \
  -k "row_pairs or poisoned or two_streams" > $work/gpu_gemv_tests.log 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -3 $work/gpu_gemv_tests.log
run() {  # tree kind args...
  local tree=$1 kind=$2 dir=$here; shift 2
  [ $tree = head ] && dir=$here/.diag/head
  t=$(( $(left) - 5 )); [ $t -lt 20 ] && return 1
  (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_$tree PYTHONPATH=/tmp/site:$dir timeout $t python3 "$@" \
     > $work/${kind}_${tree}_$round.log 2>&1; echo "$kind $tree $round rc $? at ${SECONDS}s")
}
for round in 1 2; do
  for tree in head this; do
    run $tree ops benchmarks/bench_ops.py --m 1 --no-int4 --shapes 14336x4096 4096x14336 4096x4096 1024x4096 \
      --json $work/ops_${tree}_$round.json --plot /tmp/p.png && grep -E "HLWQ Q. F.linear" $work/ops_${tree}_$round.log
  done
done
round=1
for tree in head this; do
  run $tree step benchmarks/profile_step.py --methods hlwq-q5 --steps 16 --json $work/step_$tree.json && \
    grep -E "step|^ +(q|k|v|o|gate|up|down) " $work/step_${tree}_1.log
done
cd $OUT && tar czf run4_logs.tgz work && rm -rf work
