# Session 71, call 1b (599 s of device time left after twelve requests found no machine): the GPU tests of the gated
# down projection, the group's residual add and RMSNorm (both forms) and the packed decode attention; then the
# Llama-3-8B-shaped Q5 step at batch 1 (profile_step.py, 16 steps) with the packed attention and with transformers',
# one tuning cache, all passes; then with the grouping pass only, if time is left.
OMP_NUM_THREADS=2 timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py tests/test_attention.py -k "graph_decoder or gpu_llama" 2>&1 | tail -8
echo "tests done at ${SECONDS}s"
for way in "" "--stock-attention" "--passes group --stock-attention"; do
    name=$(echo "q5 $way" | tr -d ' -')
    HLWQ_CACHE_DIR=/tmp/hlwq_cache_q5 timeout 90 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
        $way > $OUT/step_$name.log 2>&1
    echo "[$way]: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$name.log | head -22
done
