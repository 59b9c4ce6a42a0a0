#!/usr/bin/env bash
# Session 47, call 4: M = 2 on the tensor-core path (the GEMV's 27.3 us at M = 2 against the mma path's 26.0 at
# M = 4 in call 1), then decode at batch 8 on the H100 (graph way).
cd "$(dirname "$0")/../.."
HLWQ_PATH=mma timeout 90 python3 benchmarks/bench_ops.py --m 2 --bits 5 --no-int4 --shapes 14336x4096 4096x14336 \
  --json $OUT/m2_mma.json --plot $OUT/m2_mma.png > $OUT/m2_mma.log 2>&1
echo "m2 mma rc $?"; grep -E "F.linear" $OUT/m2_mma.log | tail -4
for m in bf16 hlwq-q5 int4; do
  timeout 130 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 --methods $m \
    --json $OUT/decode_b8_$m.json > $OUT/decode_b8_$m.log 2>&1; echo "$m rc $?"; grep "^{" $OUT/decode_b8_$m.log
done
rm -f $OUT/m2_mma.png
