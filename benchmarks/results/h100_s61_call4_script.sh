# Session 61, call 4 (NOTES 60 Next 3): torchao int4 on the Qwen3.5-9B shape at batch 8, alone in a call (its
# process compiles for minutes: torchao's config turns on Inductor's coordinate-descent tuning). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s61_call4_script.sh
set -x
timeout 560 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 8 --methods int4 \
  --json "$OUT/decode_qwen35_int4.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
