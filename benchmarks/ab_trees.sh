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
# if any run failed. AB_SHAPES (N x K, space-separated) replaces the four shapes; AB_STEP=0 leaves out the step (for
# a change the Q5 decode step does not run, e.g. one at Q4 only).
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
each() {  # kind seconds grep-pattern script args...: the script for each round and tree, args with NAME replaced
  local kind=$1 seconds=$2 pattern=$3 rc
  shift 3
  for round in $(seq "$rounds"); do
    for tree in base this; do
      dir=$base; [ $tree = this ] && dir=$here
      name=${tree}_$round
      run "$name" "$dir" "$seconds" "${@//NAME/$name}" > "$out/${kind}_$name.log" 2>&1
      rc=$?; [ $rc -ne 0 ] && failed=1
      echo "$kind $name: rc $rc at ${SECONDS}s"
      grep -E "$pattern" "$out/${kind}_$name.log"
    done
  done
}
# shellcheck disable=SC2086  # (the shapes split into arguments)
each ops 150 "HLWQ Q. (F.linear|GEMV)" benchmarks/bench_ops.py --m 1 --no-int4 \
  --shapes ${AB_SHAPES:-14336x4096 4096x14336 4096x4096 1024x4096} --json "$out/ops_NAME.json" --plot /tmp/ab_ops.png
[ "${AB_STEP:-1}" = 0 ] || each step 200 "step|^ +(q|k|v|o|gate|up|down|q-k-v|gate-up) " benchmarks/profile_step.py \
  --methods hlwq-q5 --steps 16 --json "$out/step_NAME.json"
rm -rf "$caches"
exit $failed
