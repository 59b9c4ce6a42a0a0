#!/usr/bin/env bash
# Session 46, call 1 (NOTES 45 Next 1): what a first call's tuning leaves allocated now that the tuner times on one
# stream per device, then bf16 and Q5 decode (graph way, batch 1) each on an empty tuning cache.
# Predicted (NOTES 46): two 32 MiB cuBLAS blocks left by the tuning instead of four; Q5 steady peak ~6.33 GiB,
# ~41.9% of bf16's steady peak (was 6.397 GiB, 42.33%).
cd "$(dirname "$0")/../.."
t0=$SECONDS
HLWQ_CACHE_DIR=/tmp/hlwq_fresh_mem timeout 240 python3 benchmarks/results/h200_s42_mem_resident.py hlwq-q5 > $OUT/mem_first.log 2>&1
echo "mem rc $? ($((SECONDS - t0)) s)"; grep -v "Warn\|warn(" $OUT/mem_first.log | tail -45
for m in bf16 hlwq-q5; do
  t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_fresh_$m timeout 150 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph \
    --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1
  echo "$m rc $? ($((SECONDS - t0)) s)"; grep "^{" $OUT/decode_$m.log
done
