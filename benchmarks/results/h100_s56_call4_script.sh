#!/usr/bin/env bash
# Session 56, call 4: results/h100_s56_call4_cudnn.py in a process with an empty cache directory. From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s56_call4_script.sh
cd "$(dirname "$0")/../.." || exit 1
cp benchmarks/results/h100_s56_call4_script.sh benchmarks/results/h100_s56_call4_cudnn.py "$OUT/"
TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout 400 python3 benchmarks/results/h100_s56_call4_cudnn.py \
  "$OUT/cudnn.json" > "$OUT/cudnn.log" 2>&1
echo "rc $? at ${SECONDS}s"; grep "^{" "$OUT/cudnn.log"; tail -3 "$OUT/cudnn.log"
