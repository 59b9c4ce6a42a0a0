# Session 71, call 1c (509 s of device time left): the GPU tests of the three default-on changes of sessions 69-71
# (gated down projection, the group's residual add and RMSNorm in both forms, the packed decode attention), then, in
# what time is left, the Q5 step at batch 1 with the packed attention and with transformers'.
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py tests/test_attention.py -k "graph_decoder or gpu_llama" 2>&1 | tail -8
echo "tests done at ${SECONDS}s"
for way in "" "--stock-attention"; do
    name=$(echo "q5 $way" | tr -d ' -')
    HLWQ_CACHE_DIR=/tmp/hlwq_cache_q5 timeout 85 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 \
        $way > $OUT/step_$name.log 2>&1
    echo "[$way]: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q-k-v|o|gate-up|down) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$name.log | head -22
done
