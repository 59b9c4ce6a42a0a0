#!/usr/bin/env bash
# Session 47, call 1: issue 4's M sweep on an H100 with today's code (M = 1..16), one process per M so a timeout
# keeps the earlier ones. Predictions: NOTES 47.
cd "$(dirname "$0")/../.."
for spec in "$@"; do
  set -- $spec
  t0=$SECONDS
  timeout $2 python3 benchmarks/bench_ops.py --m $1 --shapes 14336x4096 4096x14336 --json $OUT/sweep_m$1.json \
    --plot $OUT/sweep_m$1.png > $OUT/sweep_m$1.log 2>&1
  echo "M=$1 rc $? ($((SECONDS - t0)) s)"; grep -E "F.linear|int4  |: [0-9.]+s$" $OUT/sweep_m$1.log | tail -12
done
