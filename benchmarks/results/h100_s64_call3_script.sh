# Session 64, call 3 (NOTES 64): the Llama-3-8B-shaped decode at batch 8, the CUDA-graph way, with two older trees'
# hlwq_ops -- before session 62 (b67ff4f) and with the GEMV's competition but not hlwq.linear_siblings (65cba10) --
# carried in .diag/s62 (git archive of those commits' hlwq_ops/); a script's own folder, then PYTHONPATH, lead
# sys.path, so each run imports its tree's package. Call 2 ran this tree's. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s64_call3_script.sh
set -x
for tree in base nosib; do
  PYTHONPATH=/tmp/site:$PWD/.diag/s62/$tree:$PWD timeout 140 python3 benchmarks/bench_decode.py --models llama3-8b \
    --ways graph --batches 8 --methods hlwq-q5 --json "$OUT/decode_llama_b8_$tree.json" 2>&1 \
    | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
done
timeout 140 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 --methods hlwq-q5 \
  --json "$OUT/decode_llama_b8_head2.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
