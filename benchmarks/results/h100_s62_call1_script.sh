# Session 62, call 1 (NOTES 62), one machine: the tests of both changes on the GPU; the GEMV beside the tensor-core kernels at M = 4 and 8 on small layers
# (the tuner's pick against each family forced), then the Qwen3.5-9B-shaped decode at batch 8, the CUDA-graph way,
# with three trees' hlwq_ops in turn -- before session 62 (b67ff4f), with the GEMV's competition (65cba10), and this
# tree's, with hlwq.linear_siblings too -- and bf16. The older trees are carried in .diag/s62 (git archive of those
# commits' hlwq_ops/). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s62_call1_script.sh
set -x
timeout 100 python3 -m pytest -p no:cacheprovider -q -rfE --tb=short tests/test_kernels.py tests/test_grouping.py \
  -k "siblings or competes" 2>&1 | tail -6
timeout 130 python3 benchmarks/bench_ops.py --m 4 8 --shapes 32x4096 1024x4096 --paths --no-int4 \
  --json "$OUT/ops_small.json" --plot "$OUT/ops_small.png" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -30
for tree in base nosib head; do
  path=$PWD/.diag/s62/$tree; [ $tree = head ] && path=$PWD
  PYTHONPATH=/tmp/site:$path:$PWD timeout 110 python3 -c "import hlwq_ops; print('$tree', hlwq_ops.__file__)"
  PYTHONPATH=/tmp/site:$path:$PWD timeout 110 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph \
    --batches 8 --methods hlwq-q5 --json "$OUT/decode_qwen35_b8_$tree.json" 2>&1 \
    | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
done
timeout 100 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 8 \
  --methods bf16 --json "$OUT/decode_qwen35_b8_bf16.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -4
