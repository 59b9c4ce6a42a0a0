#!/usr/bin/env bash
# Session 35 run 4: bench_decode on the plans (0e8781c), Llama-3-8B shape, batch 1: the graph way (tok/s, TTFT = the
# eager prefill) and generate() with one reused static cache; one method per process.
cd "$(dirname "$0")/../.."
for m in hlwq-q5 bf16; do
  timeout 270 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph generate-reuse --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1; echo "$m rc $?"
  grep -v Warn $OUT/decode_$m.log | tail -6
done
