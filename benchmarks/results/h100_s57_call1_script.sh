#!/usr/bin/env bash
# Session 57, call 1 (one call for what device time is left): the GPU tests of GraphDecoder (its prompt's forward now
# captured too, GraphDecoder(prompt_graph=True)); the batch-1 decode table the CUDA-graph way with it (HLWQ Q5 and
# bf16, one process each: time to first token
# is now the timed call's replay of the prompt's graph); then benchmarks/diag_prefill.py with --graph (each forward's
# CUDA graph replayed: the GPU's time alone) and --profile (one compiled forward's profile), Q5 then bf16, in the
# time left. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s57_call1_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s57_call1_script.sh "$OUT/"
OMP_NUM_THREADS=2 timeout 130 python3 -m pytest -m gpu -n 4 tests -k "graph_decoder" -p no:cacheprovider --tb=short \
  -rfE -q > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -6 "$OUT/gpu_tests.log"
for m in hlwq-q5 bf16; do
  timeout 130 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph-prompt --batches 1 --methods $m \
    --json "$OUT/decode_$m.json" > "$OUT/decode_$m.log" 2>&1; echo "$m rc $? at ${SECONDS}s"; grep "^{" "$OUT/decode_$m.log"
done
timeout $((570 - SECONDS)) python3 benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --reps 10 --graph \
  --profile "$OUT" --json "$OUT/prefill.json" > "$OUT/prefill.log" 2>&1
echo "prefill rc $? at ${SECONDS}s"; grep "^{" "$OUT/prefill.log"; tail -3 "$OUT/prefill.log"
for f in "$OUT"/prefill_profile_*.txt; do echo "== $f"; head -20 "$f" | cut -c1-180; done
