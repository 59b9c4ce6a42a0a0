# Session 71, call 1: the GPU tests of the gated down projection (session 69), the group's residual add and RMSNorm
# (session 70; Qwen3.5's form, this session) and the packed decode attention (this session); then issue 4's batch-1
# decode ratios with all of it (GraphDecoder's defaults): the Llama-3-8B-shaped model, the CUDA-graph way, bf16,
# torchao int4 and Q5, each method in a process of its own from an empty tuning cache (as 64d, 65b and 68 ran it).
OMP_NUM_THREADS=2 timeout 130 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 \
    tests/test_kernels.py tests/test_ops.py -k "gate_and_up or glu or group_norm or normalizes" 2>&1 | tail -8
OMP_NUM_THREADS=2 timeout 130 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 8 -m gpu \
    tests/test_transformers.py tests/test_attention.py -k "graph_decoder or gpu_llama" 2>&1 | tail -8
echo "tests done at ${SECONDS}s"
for method in bf16:80 int4:100 hlwq-q5:130; do
  m=${method%:*}; t0=$SECONDS
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_$m timeout ${method#*:} python3 benchmarks/bench_decode.py --models llama3-8b \
    --ways graph --batches 1 --methods $m --json $OUT/decode_$m.json > $OUT/decode_$m.log 2>&1
  echo "$m rc $? ($((SECONDS - t0)) s)"; grep "^{" $OUT/decode_$m.log | tail -1
done
