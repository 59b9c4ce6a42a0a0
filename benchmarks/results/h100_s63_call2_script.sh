# Session 63, call 2 (NOTES 63): the Llama-3-8B-shaped decode at batch 8, the CUDA-graph way, with three trees'
# hlwq_ops in turn -- before session 62 (b67ff4f), with the GEMV's competition (65cba10), and this tree's, with
# hlwq.linear_siblings too -- and bf16, on one machine. The older trees are carried in .diag/s62 (git archive of those
# commits' hlwq_ops/); a script's own folder, then PYTHONPATH, lead sys.path, so each run imports its tree's package.
# Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s63_call2_script.sh
set -x
for tree in base nosib head; do
  path=$PWD/.diag/s62/$tree; [ $tree = head ] && path=$PWD
  PYTHONPATH=/tmp/site:$path:$PWD timeout 130 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph \
    --batches 8 --methods hlwq-q5 --json "$OUT/decode_llama_b8_$tree.json" 2>&1 \
    | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
done
timeout 110 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 \
  --methods bf16 --json "$OUT/decode_llama_b8_bf16.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
