#!/usr/bin/env bash
# Time this checkout against another one (the "base") on one GPU machine: M = 1 ops on the Llama-3-8B shapes, then
# the batch-1 decode step, the two trees alternating (base, this, base, this), each tuning into a cache of its own.
# One machine repeats a decode step time to about 0.05% (benchmarks/RESULTS.md 49a), two machines differ by ~1%:
# compare a change only with its base timed in the same call.
#
#   git worktree add .diag/base <rev>                        # here: the base, as a plain directory
#   (device call, carrying .whl and .diag)  bash benchmarks/gpu_run.sh bash benchmarks/ab_trees.sh .diag/base [rounds]
#
# Logs and JSON go to $OUT (else /tmp/hlwq_ab_out); each line it prints names the tree and the round.
set -u
base=$(cd "${1:?usage: ab_trees.sh BASE_DIR [ROUNDS]}" && pwd)
rounds=${2:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/hlwq_ab_out}
mkdir -p "$out"
run() {  # tree-name dir script args...
  local name=$1 dir=$2
  shift 2
  (cd "$dir" && HLWQ_CACHE_DIR=/tmp/hlwq_ab_cache_${name%%_*} PYTHONPATH=/tmp/site:$dir python3 "$@")
}
for round in $(seq "$rounds"); do
  for tree in base this; do
    dir=$base; [ $tree = this ] && dir=$here
    name=${tree}_$round
    run "$name" "$dir" benchmarks/bench_ops.py --m 1 --no-int4 --shapes 14336x4096 4096x14336 4096x4096 1024x4096 \
      --json "$out/ops_$name.json" --plot /tmp/ab_ops.png > "$out/ops_$name.log" 2>&1
    echo "ops $name: rc $? at ${SECONDS}s"
    grep -E "HLWQ Q. F.linear" "$out/ops_$name.log"
  done
done
for tree in base this; do
  dir=$base; [ $tree = this ] && dir=$here
  run "$tree" "$dir" benchmarks/profile_step.py --methods hlwq-q5 --steps 16 --json "$out/step_$tree.json" \
    > "$out/step_$tree.log" 2>&1
  echo "step $tree: rc $? at ${SECONDS}s"
  grep -E "step|^ +(q|k|v|o|gate|up|down) " "$out/step_$tree.log"
done
