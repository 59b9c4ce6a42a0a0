#!/usr/bin/env bash
# Session 35 run 5: is 35b's unexplained part of the prefill the garbage collector? The eager Q5 prefill, old
# (.diag/old = 0c1d90b) and new (0e8781c), each with the collector on and off; collections counted.
cd "$(dirname "$0")/../.."
for gcmode in on off; do
  for tree in old new; do
    root=$PWD; [ $tree = old ] && root=$PWD/.diag/old
    PYTHONPATH=/tmp/site:$root timeout 70 python3 .diag/s35/prefill_gc.py $gcmode $root -- --methods hlwq-q5 --top 3 > $OUT/prefill_${tree}_gc$gcmode.log 2>&1; echo "$tree gc $gcmode rc $?"
    grep -E "== |^gc " $OUT/prefill_${tree}_gc$gcmode.log
  done
done
