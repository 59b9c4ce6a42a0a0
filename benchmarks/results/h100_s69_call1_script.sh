# Session 69, call 1 (warm-up of the machine too): the GPU tests of the gated down projection (hlwq.linear_glu, the
# GEMV's GLU prologue, GraphDecoder's compiled Llama with it), then session 68's call 7 (4096 x 12288 at M = 1 on one
# machine: bench_ops from an empty cache, then diag_early's tiles alone and the tuned hlwq.linear).
OMP_NUM_THREADS=2 timeout 240 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py tests/test_transformers.py -k "gate_and_up or glu or graph_decoder" 2>&1 | tail -15
bash benchmarks/results/h100_s68_call7_script.sh
