# Session 71, call 1: the GPU tests of the gated down projection (session 69), the group's residual add and RMSNorm
# (session 70) and the packed decode attention (this session); then the Llama-3-8B-shaped decode step at batch 1
# (profile_step.py, 16 steps) for .diag/head (d1499ba: the gated down projection only) and this tree with
# transformers' SDPA attention (both fusions): the norm's fusion, A against B.
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py tests/test_attention.py -k "graph_decoder or gpu_llama" 2>&1 | tail -8
for tree in head this; do
    dir=$PWD; flag=""; [ $tree != this ] && dir=$PWD/.diag/$tree; [ $tree = this ] && flag=--stock-attention
    (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_$tree PYTHONPATH=/tmp/site:$dir timeout 110 python3 \
        benchmarks/profile_step.py --methods hlwq-q5 --steps 16 $flag > $OUT/step_$tree.log 2>&1)
    echo "$tree $flag: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q|k|v|o|gate|up|down|q-k-v|gate-up) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$tree.log | head -24
done
