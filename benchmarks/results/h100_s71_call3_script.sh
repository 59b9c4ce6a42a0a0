# Session 71, call 3: issue 4's batch-1 decode ratios with both fusions and the packed decode attention -- the
# Llama-3-8B-shaped model, the CUDA-graph way, bf16, torchao int4 and Q5, each method in a process of its own from an
# empty tuning cache (as 64d, 65b and 68 ran it).
for m in bf16 int4 hlwq-q5; do
  t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_$m timeout 170 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph \
    --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1
  echo "$m rc $? ($((SECONDS - t0)) s)"; grep "^{" $OUT/decode_$m.log
done
