# Session 61, call 3 (NOTES 61): where Q5's decode step at batch 8 goes on the Qwen3.5-9B shape, kernel by kernel,
# against bf16's (each in a process of its own). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s61_call3_script.sh
set -x
timeout 500 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 8 --methods hlwq-q5 bf16 --top 30 \
  --json "$OUT/profile_qwen35_b8.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -90
