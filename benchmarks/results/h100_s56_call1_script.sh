#!/usr/bin/env bash
# Session 56, call 1: benchmarks/diag_repeat.py on the Q5 model (graph, eager, graph with SDPA's math backend; two
# calls each, 256 new tokens, tuning off), then on the bf16 model (graph). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call1_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call1_script.sh "$OUT/"
HLWQ_AUTOTUNE=0 timeout 330 python3 benchmarks/diag_repeat.py --method hlwq-q5 --arms graph,eager,graph-math \
  --out "$OUT/repeat_q5.json" > "$OUT/repeat_q5.log" 2>&1
echo "q5 rc $? at ${SECONDS}s"; grep "^{" "$OUT/repeat_q5.log" | cut -c1-3000; tail -3 "$OUT/repeat_q5.log"
timeout 150 python3 benchmarks/diag_repeat.py --method bf16 --arms graph --out "$OUT/repeat_bf16.json" \
  > "$OUT/repeat_bf16.log" 2>&1
echo "bf16 rc $? at ${SECONDS}s"; grep "^{" "$OUT/repeat_bf16.log" | cut -c1-3000; tail -3 "$OUT/repeat_bf16.log"
