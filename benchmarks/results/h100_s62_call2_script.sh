# Session 62, call 2 (NOTES 62), on call 1's machine, with hlwq.linear_siblings: its tests and the GEMV's new
# competition's on the GPU, Q5's decode at batch 8 (Qwen3.5-9B and Llama-3-8B shapes, the CUDA-graph way) against
# call 1's, and where the Qwen3.5 step goes, kernel by kernel. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call2_script.sh
set -x
timeout 150 python3 -m pytest -p no:cacheprovider -q -rfE --tb=short tests/test_kernels.py tests/test_ops.py \
  tests/test_compiled_gemv.py -k "siblings or competes or crossovers or opaque" 2>&1 | tail -8
timeout 120 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 8 \
  --methods hlwq-q5 --json "$OUT/decode_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -6
timeout 100 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 \
  --methods hlwq-q5 --json "$OUT/decode_llama_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -6
timeout 200 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 --top 40 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -70
