# Session 32 run 2: at M = 2..64 on the small shapes, Q5 on each kernel family beside the tuned path (NOTES 31
# Next 1: at M = 64 the path is below bf16); hlwq.linear's ratios on the issue-4 sweep shapes after the sum-kernel
# change; decode at batch 8 (NOTES 31 Next 0).
set -x
date -u
timeout 230 python3 benchmarks/bench_ops.py --paths --m 2 4 8 16 32 64 --shapes 4096x4096 1024x4096 --no-int4 --json $OUT/paths.json --plot $OUT/paths.png 2>&1 | grep -v Warning | tee $OUT/paths.log
date -u
timeout 130 python3 benchmarks/bench_ops.py --m 1 4 16 64 --shapes 14336x4096 4096x14336 --json $OUT/sweep.json --plot $OUT/sweep.png 2>&1 | grep -v Warning | tee $OUT/sweep.log
date -u
timeout 150 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 8 --methods bf16 hlwq-q5 --json $OUT/decode_b8.json 2>&1 | grep -v Warning | tail -30 | tee $OUT/decode_b8.log
date -u
