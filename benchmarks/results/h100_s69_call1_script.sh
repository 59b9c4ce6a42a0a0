# Session 69, call 1: the GPU tests of the gated down projection (hlwq.linear_glu, the GEMV's GLU prologue,
# GraphDecoder's compiled models with it), then the first round of its A/B in the Llama-3-8B-shaped decode step at
# batch 1 (ab_trees.sh: the tree before it, .diag/base at beb728e, then this one; profile_step.py; its M = 1 ops on
# 1024 x 4096 only, which the change does not touch).
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py tests/test_transformers.py -k "gate_and_up or glu or graph_decoder" 2>&1 | tail -15
AB_SHAPES="1024x4096" OUT=$OUT/round1 bash benchmarks/ab_trees.sh .diag/base 1
(cd $OUT && tar czf round1.tgz round1 && rm -rf round1)  # (one file back: a call returns eight at most)
