# Session 68, call 3 (NOTES 68): EARLY tiles the tuner does not offer, beside its own, on the two large shapes at Q5
# (M = 1): VEC 16 with two rows an iteration (96 registers with EARLY, offline: 5 programs an SM) and VEC 16 R 4 at
# 3 an SM; the best with and without EARLY timed again side by side.
cd benchmarks
timeout 200 python3 diag_early.py --shapes 14336x4096 4096x14336 --bits 5 --m 1 --no-tc \
    --tiles 16,2,5,4 16,2,4,4 16,4,3,4 --json $OUT/s68_early_tiles.json
