# Session 62, call 2 (NOTES 62): the GPU tests, then where Q5's Qwen3.5-9B-shaped decode step goes at batch 8 (with
# hlwq.linear_siblings) and at batch 1, kernel by kernel. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call2_script.sh
set -x
OMP_NUM_THREADS=2 timeout 320 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -25
timeout 120 python3 -m pytest -p no:cacheprovider -q -rfE --tb=short tests/test_kernels.py tests/test_ops.py \
  -k "siblings or competes or crossovers" 2>&1 | tail -6
timeout 130 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 --top 40 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -60
