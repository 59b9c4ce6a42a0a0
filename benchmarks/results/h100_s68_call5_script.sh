# Session 68, call 5 (warm, after the suite): EARLY at M = 2 (Q5; every GEMV candidate, both MB, with and without),
# then bench_ops at M = 2 as the tuner now chooses.
cd benchmarks
timeout 150 python3 diag_early.py --shapes 14336x4096 4096x14336 --bits 5 --m 2 --no-tc --json $OUT/s68_early_m2.json
timeout 120 python3 bench_ops.py --m 2 --shapes 14336x4096 4096x14336 --json $OUT/s68_ops_m2.json \
    --plot $OUT/s68_ops_m2.png 2>&1 | grep -v "Warning\|Configuration class"
cat $HLWQ_CACHE_DIR/*.json > $OUT/s68_call5_tuning_cache.json
