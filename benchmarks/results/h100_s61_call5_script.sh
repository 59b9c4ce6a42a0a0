# Session 61, call 5 (NOTES 61): Bloom's GraphDecoder GPU tests (its prompt's mask spanning the cache), then where
# Q5's decode step at batch 1 goes on the Qwen3.5-9B shape (beside call 3's batch 8). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s61_call5_script.sh
set -x
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -m gpu -n 4 tests/test_transformers.py -k "other_models" \
  -p no:cacheprovider -q -rfE --tb=short 2>&1 | tail -30
timeout 150 python3 benchmarks/profile_step.py --model qwen3.5-9b --batch 1 --methods hlwq-q5 --top 20 \
  --json "$OUT/profile_qwen35_b1.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
