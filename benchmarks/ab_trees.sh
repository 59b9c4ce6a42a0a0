#!/usr/bin/env bash
# Time this checkout against another one (the "base") on one GPU machine: M = 1 ops on the Llama-3-8B shapes and the
# batch-1 decode step, the two trees alternating (base, this, base, this, ...), each tuning afresh into a cache of its
# own. Two runs of one step time on one machine came 0.05% and 0.8% apart, two machines 1-4% (benchmarks/RESULTS.md
# 49a-b): compare a change only with its base timed in the same call.
#
#   git worktree add .diag/base <rev>                        # here: the base, as a plain directory
#   (device call, carrying .whl and .diag)  bash benchmarks/gpu_run.sh bash benchmarks/ab_trees.sh .diag/base [rounds]
#
# Logs and JSON go to $OUT (else /tmp/hlwq_ab_out); each line it prints names the tree and the round. Exits non-zero
# if any run failed.
set -u
base=$(cd "${1:?usage: ab_trees.sh BASE_DIR [ROUNDS]}" && pwd) || exit 2
rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/hlwq_ab_out}
caches=$(mktemp -d)  # fresh tuning caches: one for each tree, kept across its rounds
mkdir -p "$out"
failed=0
run() {  # name dir seconds script args...: one process of a tree
  local name=$1 dir=$2 seconds=$3
  shift 3
  (cd "$dir" && HLWQ_CACHE_DIR=$caches/${name%%_*} PYTHONPATH=/tmp/site:$dir timeout "$seconds" python3 "$@")
}
for round in $(seq "$rounds"); do
  for tree in base this; do
    dir=$base; [ $tree = this ] && dir=$here
    name=${tree}_$round
    run "$name" "$dir" 150 benchmarks/bench_ops.py --m 1 --no-int4 --shapes 14336x4096 4096x14336 4096x4096 \
      1024x4096 --json "$out/ops_$name.json" --plot /tmp/ab_ops.png > "$out/ops_$name.log" 2>&1
    rc=$?; [ $rc -ne 0 ] && failed=1
    echo "ops $name: rc $rc at ${SECONDS}s"
    grep -E "HLWQ Q. F.linear" "$out/ops_$name.log"
  done
done
for round in $(seq "$rounds"); do
  for tree in base this; do
    dir=$base; [ $tree = this ] && dir=$here
    name=${tree}_$round
    run "$name" "$dir" 200 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 --json "$out/step_$name.json" \
      > "$out/step_$name.log" 2>&1
    rc=$?; [ $rc -ne 0 ] && failed=1
    echo "step $name: rc $rc at ${SECONDS}s"
    grep -E "step|^ +(q|k|v|o|gate|up|down) " "$out/step_$name.log"
  done
done
rm -rf "$caches"
exit $failed
