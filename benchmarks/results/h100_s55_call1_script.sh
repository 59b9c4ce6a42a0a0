#!/usr/bin/env bash
# Session 55, call 1 (benchmarks/NOTES.md, session 55): the grouped projections (hlwq_ops.grouping) on an H100.
# First, on the machine's empty tuning cache, the batch-1 decode step without and with grouping, alternating (two
# rounds each; round 1 tunes); then the GPU tests of the GEMV, the group kernel and the ops. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s55_call1_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s55_call1_script.sh "$OUT/"
timeout 330 python3 benchmarks/diag_grouped.py --rounds 2 --json "$OUT/diag_grouped.json" > "$OUT/diag_grouped.log" 2>&1
echo "diag rc $? at ${SECONDS}s"; grep "^{" "$OUT/diag_grouped.log"; tail -3 "$OUT/diag_grouped.log"
timeout 200 python3 -m pytest -n 8 -q -p no:cacheprovider --tb=short -rfE tests/test_kernels.py tests/test_ops.py \
  -k "group or gemv_warp_partials or poisoned_output_fully" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -8 "$OUT/gpu_tests.log"
