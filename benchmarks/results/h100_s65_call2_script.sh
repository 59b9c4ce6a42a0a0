# Session 65, call 2 (NOTES 65): the Qwen3.5-9B-shaped decode, the CUDA-graph way, batch 1 and 8, bf16, torchao int4
# (quantized with set_inductor_config=False: Inductor's settings as the other methods have them) and Q5 in one
# process, on an H100. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s65_call2_script.sh
# (After this call the option's value `default` was renamed `unchanged` and made the default.)
set -x
timeout 540 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 1 8 \
  --methods bf16 int4 hlwq-q5 --int4-inductor default --json "$OUT/decode_qwen35.json" 2>&1 \
  | grep -v "^\s*warnings.warn\|UserWarning" | tail -60
