#!/usr/bin/env bash
# Session 49, call 2: the decode step (batch 1) with every GEMV launched with PDL (HLWQ_PDL=1), bracketed by the
# default (the GEMV without PDL) before and after.
cd "$(dirname "$0")/../.."
cp .diag/s49/run2.sh $OUT/run2_script.sh
for run in default pdl1 default2; do
  if [ $run = pdl1 ]; then export HLWQ_PDL=1; else unset HLWQ_PDL; fi
  timeout 190 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 32 \
    --json $OUT/profile_step_$run.json > $OUT/profile_step_$run.log 2>&1; echo "$run rc $?"
  grep -E "step|^ +(q|k|v|o|gate|up|down) " $OUT/profile_step_$run.log
done
