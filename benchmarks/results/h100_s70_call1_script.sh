# Session 70, call 1: the GPU tests of the gated down projection (session 69) and of the group's residual add and
# RMSNorm (this session, uncommitted when run), on this tree; then the Llama-3-8B-shaped decode step at batch 1
# (profile_step.py, 16 steps), three trees one after another: .diag/base (beb728e, before both), .diag/head (session
# 69's end: the gated down projection), this tree (both).
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 120 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py -k graph_decoder 2>&1 | tail -6
for tree in base head this; do
    dir=$PWD; [ $tree != this ] && dir=$PWD/.diag/$tree
    (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_$tree PYTHONPATH=/tmp/site:$dir timeout 110 python3 \
        benchmarks/profile_step.py --methods hlwq-q5 --steps 16 > $OUT/step_$tree.log 2>&1)
    echo "$tree: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q|k|v|o|gate|up|down|q-k-v|gate-up) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_$tree.log | head -30
done
