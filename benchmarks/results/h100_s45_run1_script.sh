#!/usr/bin/env bash
# Session 44's plan for the next device call (none was lent in session 44): the issues' target tables on the
# machine they were set on. The device now defaults to an H100; every ratio since session 5 is the H200's, where
# bf16 cuBLAS is faster (4.1 vs 3.0 TB/s) and the decode-bound HLWQ kernels are not. One call, ~500 s with tuning.
# Predictions (NOTES 44): Q5 F.linear M = 1 on 14336 x 4096 ~20-21 us against bf16 ~42-44 (2.0-2.2x; target 2.5x),
# torchao int4 ~19.6-20.3 (Q5 about level with it); decode batch 1 graph way Q5 ~1.7-1.9x bf16 (target 2.2x).
cd "$(dirname "$0")/../.."
timeout 300 python3 benchmarks/bench_ops.py --m 1 --json $OUT/ops_m1.json --plot $OUT/ops_m1.png > $OUT/ops_m1.log 2>&1
echo "ops rc $?"; tail -60 $OUT/ops_m1.log
for m in bf16 int4 hlwq-q5; do
  timeout 150 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods $m \
    --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1; echo "$m rc $?"; grep "^{" $OUT/decode_$m.log
done
