#!/usr/bin/env bash
# Session 53's next call (benchmarks/NOTES.md, session 53, Next 1), within $1 s: ncu source counters of the GEMV at
# M = 1 on 1024 x 4096, Q4 against Q5 on one tile (VEC 16 R 4 ROWS 4, with EARLY and without) and Q4's pick (VEC 16
# R 8 ROWS 8 WARP_PARTS 4), each summed by ncu_stalls.py: where Q4's longer time goes. From the repository root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/s53_call1_script.sh 300
# ncu has segfaulted on a GEMV run before (results/h200_s13_run3_ncu_l1_pipe_shfl.txt): each case has its own log
# and timeout, so one failure costs only its case.
cd "$(dirname "$0")/../.."
work=$OUT/work; mkdir -p "$work"; cp "$0" "$work/"
deadline=${1:-300}
ncu --version | tail -1
profile() {  # name, bits, config (JSON)
  local left=$((deadline - SECONDS - 10))
  if ((left < 30)); then echo "$1 skipped: ${left}s left"; return; fi
  timeout $((left < 90 ? left : 90)) ncu --clock-control none --kernel-name regex:_gemv_kernel --launch-skip 3 \
    --launch-count 1 --set full --import-source yes -f -o "$work/$1" \
    python3 benchmarks/profile_gemv.py 1024x4096 "$2" "$3" > "$work/$1.log" 2>&1
  echo "$1: ncu rc $? at ${SECONDS}s"
  [[ -f $work/$1.ncu-rep ]] || return
  ncu --import "$work/$1.ncu-rep" --page source --csv --print-source sass > "$work/$1_sass.csv" 2>> "$work/$1.log"
  ncu --import "$work/$1.ncu-rep" --page details --csv > "$work/$1_details.csv" 2>> "$work/$1.log"
  python3 benchmarks/ncu_stalls.py "$work/$1_sass.csv" --top 30 > "$work/$1_stalls.txt" 2>&1
  head -25 "$work/$1_stalls.txt"
}
profile q4_r4 4 '{"VEC": 16, "R": 4, "ROWS": 4, "num_warps": 4}'
profile q5_r4 5 '{"VEC": 16, "R": 4, "ROWS": 4, "num_warps": 4}'
profile q4_r4_early 4 '{"VEC": 16, "R": 4, "ROWS": 4, "num_warps": 4, "EARLY": true}'
profile q5_r4_early 5 '{"VEC": 16, "R": 4, "ROWS": 4, "num_warps": 4, "EARLY": true}'
profile q4_pick 4 '{"VEC": 16, "R": 8, "ROWS": 8, "num_warps": 4, "WARP_PARTS": 4}'
cd "$OUT" && tar czf run1_logs.tgz work && rm -rf work
