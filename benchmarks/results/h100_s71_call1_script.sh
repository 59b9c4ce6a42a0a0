# Session 71, call 1: the GPU tests of the gated down projection (session 69), the group's residual add and RMSNorm
# (session 70; Qwen3.5's form, this session) and the packed decode attention (this session); then the Llama-3-8B-shaped
# Q5 decode step at batch 1 (profile_step.py, 16 steps), three ways in this tree, one tuning cache: only the grouping
# pass and transformers' attention (the step before sessions 69-71), all passes and transformers' attention, all passes
# and the packed attention (GraphDecoder's default).
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py tests/test_attention.py -k "graph_decoder or gpu_llama" 2>&1 | tail -8
echo "tests done at ${SECONDS}s"
for way in "--passes group --stock-attention" "--stock-attention" ""; do
    name=$(echo "q5 $way" | tr -d ' -'); 
    HLWQ_CACHE_DIR=/tmp/hlwq_cache_this timeout 110 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
        $way > $OUT/step_$name.log 2>&1
    echo "[$way]: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$name.log | head -22
done
