# Session 32 run 3: more programs for wsrs on the small shapes (twice the split of K; half the BM at M > 16),
# benchmarks/diag_split.py.
set -x
date -u
timeout 450 python3 benchmarks/diag_split.py --shapes 1024x4096 4096x4096 --bits 5 4 --m 64 16 32 --json $OUT/split.json 2>&1 | grep -v Warning | tee $OUT/split.log
date -u
