#!/usr/bin/env bash
# Session 54, call 3 (benchmarks/NOTES.md, session 54): what one GEMV over q, k and v's rows (6144 x 4096) and over
# gate and up's (28672 x 4096) takes against its parts, Llama-3-8B shapes, M = 1, one run. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s54_call3_script.sh
cd "$(dirname "$0")/../.."
cp "$0" "$OUT/"
timeout 400 python3 benchmarks/bench_ops.py --m 1 --shapes 6144x4096 28672x4096 4096x4096 1024x4096 14336x4096 \
  --json $OUT/ops_fused_shapes.json --plot $OUT/ops_fused_shapes.png > $OUT/ops_fused_shapes.log 2>&1
echo "ops rc $? at ${SECONDS}s"; grep -E "^ +1 " $OUT/ops_fused_shapes.log
