# Session 70, call 2 (for the next session with a GPU, after call 1's tests pass): issue 4's batch-1 decode ratios
# with both fusions -- the Llama-3-8B-shaped model, the CUDA-graph way, bf16, torchao int4 and Q5, each method in a
# process of its own from an empty tuning cache (as 64d and 65b ran it), then the Q5 step's profile on the same machine.
for m in bf16 int4 hlwq-q5; do
  t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_$m timeout 150 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph \
    --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1
  echo "$m rc $? ($((SECONDS - t0)) s)"; grep "^{" $OUT/decode_$m.log
done
HLWQ_CACHE_DIR=/tmp/hlwq_cache_hlwq-q5 timeout 110 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
    > $OUT/step.log 2>&1
echo "profile rc $?"; grep -E "step|^ +(q-k-v|o|gate-up|down) " $OUT/step.log | head -20
