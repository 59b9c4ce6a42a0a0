# Session 69, the last request the device time allowed (~310 s left, a machine's start ~85 s): the GPU tests of the
# gated down projection only (hlwq.linear_glu; the GEMV's GLU prologue on every candidate of Llama-3-8B's down
# projection; kernels.linear_glu; GraphDecoder's compiled models, which the pass now fuses), no timing.
OMP_NUM_THREADS=2 timeout 90 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu" 2>&1 | tail -6
OMP_NUM_THREADS=2 timeout 110 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py -k graph_decoder 2>&1 | tail -6
