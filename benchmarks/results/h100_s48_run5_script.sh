#!/usr/bin/env bash
# Session 48, call 5: Q5's decode step with torchao's recommended Inductor settings (which Int4WeightOnlyConfig
# applies to the process: int4's lm_head became a fused reduction, 327.7 us against cuBLAS's 365.2 in call 4).
cd "$(dirname "$0")/../.."
timeout $1 python3 benchmarks/profile_step.py --methods hlwq-q5 --inductor-recommended --steps 32 \
  --json $OUT/profile_step_cdt.json > $OUT/profile_step_cdt.log 2>&1
echo "rc $?"; cat $OUT/profile_step_cdt.log | grep -v Warning | head -40
