# Session 64, call 1 (NOTES 64): the GPU suite on session 63's fixes (the tuned-choice test reading
# tuning.tuned_choices; Bloom's eager captures skipped under transformers 5.17), then where Q5's Qwen3.5-9B-shaped
# decode step goes at batch 1, kernel by kernel. A fresh machine needs more than 330 s for the suite. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s64_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 420 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -25
timeout 160 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 1 --methods hlwq-q5 --top 30 \
  --json "$OUT/profile_qwen35_b1.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
