# Session 62, call 3 (NOTES 62): the GPU tests, then where Q5's Qwen3.5-9B-shaped decode step goes at batch 1. Run
# from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call3_script.sh
set -x
OMP_NUM_THREADS=2 timeout 330 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -25
timeout 200 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 1 --methods hlwq-q5 --top 30 \
  --json "$OUT/profile_qwen35_b1.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -50
