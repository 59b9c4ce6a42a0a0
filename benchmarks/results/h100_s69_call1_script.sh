# Session 69, call 1 (the one call this session's device time allowed after nine requests found no machine): the GPU
# tests of the gated down projection (hlwq.linear_glu, the GEMV's GLU prologue on every candidate, GraphDecoder's
# compiled models with the pass), then one A/B pair of the Llama-3-8B-shaped decode step at batch 1 (profile_step.py,
# 16 steps): the tree before the fusion (.diag/base, commit beb728e), then this one, each tuning afresh.
OMP_NUM_THREADS=2 timeout 100 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu" 2>&1 | tail -6
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py -k graph_decoder 2>&1 | tail -6
for tree in base this; do
    dir=$PWD; [ $tree = base ] && dir=$PWD/.diag/base
    (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_$tree PYTHONPATH=/tmp/site:$dir timeout 120 python3 \
        benchmarks/profile_step.py --methods hlwq-q5 --steps 16 > $OUT/step_$tree.log 2>&1)
    echo "$tree: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q|k|v|o|gate|up|down|q-k-v|gate-up) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$tree.log | head -30
done
