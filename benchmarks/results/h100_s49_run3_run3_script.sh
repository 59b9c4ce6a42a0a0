#!/usr/bin/env bash
# Session 49, call 3: the GEMV with its plane-1 word shared within a thread's aligned words and the codebook scale
# folded into the activations (working tree) against HEAD 9dfd8ca (.diag/s49/base), on one machine: M = 1 ops on
# the four Llama shapes, then the batch-1 decode step; each tree tunes into a cache of its own.
cd "$(dirname "$0")/../.."
cp .diag/s49/run3.sh $OUT/run3_script.sh
here=$PWD
for tree in base new base2 new2; do
  case $tree in base*) dir=$here/.diag/s49/base;; *) dir=$here;; esac
  export HLWQ_CACHE_DIR=/tmp/hlwq_cache_${tree%2}
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 110 python3 benchmarks/bench_ops.py --m 1 --no-int4 \
     --shapes 14336x4096 4096x14336 4096x4096 1024x4096 --json $OUT/ops_$tree.json --plot /tmp/p.png \
     > $OUT/ops_$tree.log 2>&1; echo "ops $tree rc $?")
  grep -E "HLWQ|bf16" $OUT/ops_$tree.log | head -30
done
for tree in base new; do
  case $tree in base) dir=$here/.diag/s49/base;; *) dir=$here;; esac
  export HLWQ_CACHE_DIR=/tmp/hlwq_cache_$tree
  (cd $dir && PYTHONPATH=/tmp/site:$dir timeout 130 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
     --json $OUT/profile_$tree.json > $OUT/profile_$tree.log 2>&1; echo "profile $tree rc $?")
  grep -E "step|^ +(q|k|v|o|gate|up|down) " $OUT/profile_$tree.log
done
cd $OUT && tar czf ops_logs.tgz ops_*.log ops_*.json && rm ops_*.log ops_*.json
