# Written in session 72 for the call after next1: issue 4's batch-1 ratios with GraphDecoder's new defaults (combo
# kernels, transformers' attention, the greedy pick in two reductions), each method in a process of its own from an
# empty tuning cache; then the Q5 step's profile (the pick's kernels against session 72's 30.5 us argmax).
for method in bf16:80 int4:90 hlwq-q5:120; do
  m=${method%:*}; t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_$m timeout ${method#*:} python3 benchmarks/bench_decode.py --models llama3-8b \
    --ways graph --batches 1 --methods $m --json $OUT/decode_$m.json > /tmp/decode_$m.log 2>&1
  rc=$?; echo "$m rc $rc ($((SECONDS - t0)) s)"; grep "^{" /tmp/decode_$m.log | tail -1
  [ $rc = 0 ] || tail -15 /tmp/decode_$m.log  # (the device returns 8 files a call: the logs stay there)
done
HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 100 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
    > $OUT/step_q5.log 2>&1
echo "q5 step rc $? at ${SECONDS}s"
grep -E "step|argmax|max_|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_q5.log | head -30
# The norm's prologue alone (NOTES 72 Next 2): the q-k-v and gate-up groups with it, without it, and after Inductor's
# norm kernel.
HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 80 python3 benchmarks/diag_norm.py --json $OUT/diag_norm.json > $OUT/diag_norm.log 2>&1
echo "diag_norm rc $? at ${SECONDS}s"; tail -4 $OUT/diag_norm.log
