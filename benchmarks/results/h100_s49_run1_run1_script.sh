#!/usr/bin/env bash
# Session 49, call 1: Q5's GEMV against int4's tinygemm by place in a layer inside the decode step, PDL on and off,
# beside the isolated M = 1 op times of the same machine.
cd "$(dirname "$0")/../.."
cp .diag/s49/run1.sh $OUT/run1_script.sh
timeout 290 python3 benchmarks/profile_step.py --methods hlwq-q5 int4 --steps 32 \
  --json $OUT/profile_step.json > $OUT/profile_step.log 2>&1; echo "profile rc $?"
HLWQ_PDL=0 timeout 170 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 32 \
  --json $OUT/profile_step_nopdl.json > $OUT/profile_step_nopdl.log 2>&1; echo "nopdl rc $?"
timeout 110 python3 benchmarks/bench_ops.py --m 1 --bits 5 --shapes 4096x4096 1024x4096 14336x4096 4096x14336 \
  --json $OUT/ops_m1.json --plot $OUT/ops_m1.png > $OUT/ops_m1.log 2>&1; echo "ops rc $?"
grep -v -i warn $OUT/profile_step.log | head -80
grep -v -i warn $OUT/profile_step_nopdl.log | head -40
grep -v -i warn $OUT/ops_m1.log | tail -20
