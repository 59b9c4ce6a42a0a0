#!/usr/bin/env bash
# Session 56, call 5: the GPU tests of groups, resolved calls and GraphDecoder on the code after the review. From the
# root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call5_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call5_script.sh "$OUT/"
OMP_NUM_THREADS=2 timeout -s INT 280 python3 -m pytest -m gpu -n 8 tests -k "group or resolved or graph_decoder" \
  -p no:cacheprovider --tb=short -rfE -q > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -4 "$OUT/gpu_tests.log"
