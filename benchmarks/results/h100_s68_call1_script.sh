# Session 68, call 1: every GEMV candidate of the tuner with and without EARLY on the four large shapes at Q5 and Q4
# (M = 1), the best of each then timed in alternating rounds; then bench_ops at M = 1 with the tuner offering EARLY
# on every shape (results/h100_s68_call1_tuner.diff on top of the commit), and the tuning cache it wrote (each key's
# first-call tuning seconds).
cd benchmarks
timeout 330 python3 diag_early.py --shapes 14336x4096 4096x14336 12288x4096 4096x12288 --bits 5 4 --m 1 \
    --json $OUT/s68_early.json
timeout 200 python3 bench_ops.py --m 1 --shapes 14336x4096 4096x14336 12288x4096 4096x4096 \
    --json $OUT/s68_ops_m1.json --plot $OUT/s68_ops_m1.png
cat $HLWQ_CACHE_DIR/*.json > $OUT/s68_tuning_cache.json
