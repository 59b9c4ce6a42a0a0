# Session 68, call 7 (NOTES 68 Next 1): 4096 x 12288 at M = 1 again on one machine: bench_ops tuning from an empty
# cache (bf16, int4, Q5 F.linear), then diag_early on the same shape (every Q5 GEMV tile with and without EARLY alone,
# and hlwq.linear as tuned), to see whether Q5 F.linear's 0.96x int4 in call 2 is the kernel or F.linear's own cost.
cd benchmarks
export HLWQ_CACHE_DIR=/tmp/hlwq_cache_c7
timeout 75 python3 bench_ops.py --m 1 --shapes 4096x12288 --json $OUT/s68_ops_4096x12288.json \
    --plot $OUT/s68_ops_4096x12288.png 2>&1 | grep "4096x12288"
cat $HLWQ_CACHE_DIR/*.json > $OUT/s68_call7_cache.json
timeout 60 python3 diag_early.py --shapes 4096x12288 --bits 5 --m 1 --no-tc --json $OUT/s68_call7_early.json 2>&1 \
    | grep -v "Warning\|Configuration class"
