# Session 71, call 2 (call 1's machine, its tuning caches kept): the Llama-3-8B-shaped Q5 decode step at batch 1
# (profile_step.py, 16 steps), three ways in this tree: only the grouping pass and transformers' attention (the step
# before sessions 69-71), all passes and transformers' attention, all passes and the packed attention (GraphDecoder's
# default); then bf16's step with the packed attention and with transformers' (the attention's change is every
# method's).
for way in "--passes group --stock-attention" "--stock-attention" ""; do
    name=$(echo "q5 $way" | tr -d ' -')
    HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 100 python3 benchmarks/profile_step.py --methods hlwq-q5 \
        --steps 16 $way > $OUT/step_$name.log 2>&1
    echo "[$way]: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$name.log | head -22
done
for way in "" "--stock-attention"; do
    timeout 70 python3 benchmarks/profile_step.py --methods bf16 --steps 16 --top 8 $way > $OUT/step_bf16$way.log 2>&1
    echo "bf16 [$way]: rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_bf16$way.log | head -10
done
HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 100 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
    --inductor combo_kernels=True > $OUT/step_q5_combo.log 2>&1
echo "q5 [combo_kernels]: rc $? at ${SECONDS}s"
grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_q5_combo.log | head -22
