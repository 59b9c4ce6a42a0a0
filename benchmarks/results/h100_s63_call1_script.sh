# Session 63, call 1 (NOTES 63): the GPU suite on session 62's changes and this session's; then where Q5's Qwen3.5-9B-shaped decode step goes at batch 8 (with session 62's GEMV on
# the small projections and hlwq.linear_siblings) and at batch 1, kernel by kernel, on one machine. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s63_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 330 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -25
timeout 120 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 --top 40 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -50
timeout 110 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 1 --methods hlwq-q5 --top 30 \
  --json "$OUT/profile_qwen35_b1.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
