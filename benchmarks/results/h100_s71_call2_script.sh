# Session 71, call 2: issue 4's batch-1 decode ratios with the fusions and the packed decode attention (GraphDecoder's
# defaults) -- the Llama-3-8B-shaped model, the CUDA-graph way, bf16, torchao int4 and Q5, each method in a process of
# its own from an empty tuning cache (as 64d, 65b and 68 ran it); then bf16's step with the packed attention and with
# transformers' (the attention's change is every method's), and Q5's with the grouping and gated-down passes only.
for method in bf16:80 int4:100 hlwq-q5:130; do
  m=${method%:*}; t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_$m timeout ${method#*:} python3 benchmarks/bench_decode.py --models llama3-8b \
    --ways graph --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1
  echo "$m rc $? ($((SECONDS - t0)) s)"; grep "^{" $OUT/decode_$m.log | tail -1
done
for way in "" "--stock-attention"; do
    timeout 70 python3 benchmarks/profile_step.py --methods bf16 --steps 16 --top 8 $way > $OUT/step_bf16$way.log 2>&1
    echo "bf16 [$way]: rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_bf16$way.log | head -10
done
HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 90 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
    --passes group,glu --stock-attention > $OUT/step_q5_glu.log 2>&1
echo "q5 [group,glu, stock attention]: rc $? at ${SECONDS}s"
grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_q5_glu.log | head -22
