#!/usr/bin/env bash
# Session 56, call 3: the GPU tests of groups and resolved calls; results/h100_s56_call3_decode.py (cuDNN's attention on and off in GraphDecoder; generate() with
# and without GroupProjections; bf16's generate()), then diag_repeat.py's graph-nocudnn arm. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call3_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call3_script.sh benchmarks/results/h100_s56_call3_decode.py "$OUT/"
OMP_NUM_THREADS=4 timeout 100 python3 -m pytest -m gpu -n 4 tests/test_kernels.py -k "group or resolved" \
  -p no:cacheprovider --tb=short -rfE -q > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -3 "$OUT/gpu_tests.log"
timeout 420 python3 benchmarks/results/h100_s56_call3_decode.py "$OUT/decode.json" > "$OUT/decode.log" 2>&1
echo "decode rc $? at ${SECONDS}s"; grep "^{" "$OUT/decode.log"; tail -3 "$OUT/decode.log"
HLWQ_AUTOTUNE=0 timeout $((560 - SECONDS)) python3 benchmarks/diag_repeat.py --method hlwq-q5 --arms graph-nocudnn \
  --out "$OUT/repeat_nocudnn.json" > "$OUT/repeat_nocudnn.log" 2>&1
echo "repeat rc $? at ${SECONDS}s"; grep "^{" "$OUT/repeat_nocudnn.log" | cut -c1-1500; tail -2 "$OUT/repeat_nocudnn.log"
