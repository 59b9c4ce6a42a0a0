#!/usr/bin/env bash
# The next call (benchmarks/NOTES.md, session 53, Next 1), within $1 s, with results/s53_vec8.patch applied here and
# .diag/head a worktree of HEAD without it: the GPU tests that run every GEMV candidate (now VEC = 8 tiles on the
# small shapes too) and VEC = 8 and 16 over split K with warp partials; ncu on Q4's pick and on Q4 VEC 8 R 8
# (1024 x 4096); every candidate timed with care (diag_tuner.py, small shapes, bits 4 and 5); then ab_trees.sh
# against .diag/head on the small shapes, two rounds, no decode step. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/s53_call2_script.sh 460
cd "$(dirname "$0")/../.."
work=$OUT/work; mkdir -p "$work"; cp "$0" "$work/"
deadline=${1:-460}
OMP_NUM_THREADS=2 timeout 150 python3 -m pytest -m gpu -n 8 tests/test_kernels.py -p no:cacheprovider --tb=short -q \
  -rA -k "poisoned_output_fully_written or warp_partials" > "$work/gpu_gemv_tests.log" 2>&1
echo "gpu gemv tests rc $? at ${SECONDS}s"; tail -2 "$work/gpu_gemv_tests.log"
for case in 'q4_pick {"VEC": 16, "R": 8, "ROWS": 8, "num_warps": 4, "WARP_PARTS": 4}' \
            'q4_vec8 {"VEC": 8, "R": 8, "ROWS": 8, "num_warps": 4}'; do
  name=${case%% *}; config=${case#* }
  timeout 60 ncu --clock-control none --kernel-name regex:_gemv_kernel --launch-skip 3 --launch-count 1 --set full \
    --import-source yes -f -o "$work/$name" python3 benchmarks/profile_gemv.py 1024x4096 4 "$config" \
    > "$work/$name.log" 2>&1
  echo "$name: ncu rc $? at ${SECONDS}s"
  [[ -f $work/$name.ncu-rep ]] || continue
  timeout 30 ncu --import "$work/$name.ncu-rep" --page source --csv --print-source sass > "$work/${name}_sass.csv" \
    2>> "$work/$name.log"
  timeout 30 ncu --import "$work/$name.ncu-rep" --page details --csv > "$work/${name}_details.csv" 2>> "$work/$name.log"
  timeout 30 python3 benchmarks/ncu_stalls.py "$work/${name}_sass.csv" --top 20 > "$work/${name}_stalls.txt" 2>&1
  head -4 "$work/${name}_stalls.txt"; rm -f "$work/$name.ncu-rep"
done
(cd benchmarks && HLWQ_CACHE_DIR=/tmp/hc_diag timeout 140 python3 diag_tuner.py --shapes 1024x4096 4096x4096 \
  --bits 4 5 --trials 1 --rounds 2 --json "$work/diag_tuner_small.json") > "$work/diag_tuner_small.log" 2>&1
echo "diag_tuner rc $? at ${SECONDS}s"; grep -E "picked|best" "$work/diag_tuner_small.log" | cut -c1-110
left=$((deadline - SECONDS - 5))
if ((left >= 60)); then  # (timeout 0 would not time out; a negative one fails at once)
  OUT=$work/ab AB_SHAPES="4096x4096 1024x4096" AB_STEP=0 timeout $left bash benchmarks/ab_trees.sh .diag/head 2
  echo "ab_trees rc $? at ${SECONDS}s"
else
  echo "ab_trees skipped: ${left}s left"
fi
cd "$OUT" && tar czf call2_logs.tgz work && rm -rf work
