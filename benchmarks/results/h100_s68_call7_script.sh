# Session 68, call 7 (NOTES 68 Next 1): 4096 x 12288 at M = 1 again, two processes each tuning from an empty cache,
# to see whether Q5 F.linear's 0.96x int4 in call 2 is the shape or the tuner's pick.
cd benchmarks
for run in a b; do
  HLWQ_CACHE_DIR=/tmp/hlwq_cache_$run timeout 75 python3 bench_ops.py --m 1 --shapes 4096x12288 \
      --json $OUT/s68_ops_4096x12288_$run.json --plot $OUT/s68_ops_4096x12288_$run.png 2>&1 | grep "4096x12288"
  cat /tmp/hlwq_cache_$run/*.json > $OUT/s68_call7_cache_$run.json
done
