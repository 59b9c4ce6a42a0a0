#!/usr/bin/env bash
# Session 48, calls 3 and 4 (call 3 with bf16 too, before profile_step.py reset the cache): a decode step's kernels, Q5 / int4 / bf16 (Llama-3-8B shape, batch 1, graph way), to find
# where Q5's step (4.19 ms in RESULTS 45b) spends 0.34 ms more than int4's (3.84) with linears about as fast in
# isolation (45a). Prediction: NOTES 48.
cd "$(dirname "$0")/../.."
timeout $1 python3 benchmarks/profile_step.py --methods hlwq-q5 int4 --steps 32 --json $OUT/profile_step.json \
  > $OUT/profile_step.log 2>&1
echo "rc $?"; cat $OUT/profile_step.log | grep -v Warning | head -120
