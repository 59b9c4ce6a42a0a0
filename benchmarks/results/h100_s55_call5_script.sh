#!/usr/bin/env bash
# Session 55, call 5: results/h100_s55_call5_determinism.py, then the GPU tests (all, as far as 190 s go; SIGINT
# makes pytest print its summary). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s55_call5_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s55_call5_script.sh benchmarks/results/h100_s55_call5_determinism.py "$OUT/"
timeout 130 python3 benchmarks/results/h100_s55_call5_determinism.py "$OUT/determinism.json" > "$OUT/determinism.log" 2>&1
echo "rc $? at ${SECONDS}s"; grep "^{" "$OUT/determinism.log"; tail -2 "$OUT/determinism.log"
OMP_NUM_THREADS=2 timeout -s INT 190 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; tail -12 "$OUT/gpu_tests.log"
