# Session 62, call 2 (NOTES 62): where Q5's Qwen3.5-9B-shaped decode step goes at batch 8 (with the GEMV competing at
# M = 8 on small layers) and at batch 1, kernel by kernel, on the machine of call 1. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call2_script.sh
set -x
timeout 250 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 --top 30 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -60
timeout 250 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 1 --methods hlwq-q5 --top 30 \
  --json "$OUT/profile_qwen35_b1.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -60
