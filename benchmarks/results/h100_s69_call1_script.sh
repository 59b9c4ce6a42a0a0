# Session 69, call 1: session 68's call 7 (4096 x 12288 at M = 1 on one machine: bench_ops from an empty cache, then
# diag_early's tiles alone and the tuned hlwq.linear), then the Llama-3-8B-shaped decode step's kernels (Q5, batch 1).
bash benchmarks/results/h100_s68_call7_script.sh
cd benchmarks
timeout 200 python3 profile_step.py --methods hlwq-q5 --json $OUT/s69_profile_step.json 2>&1 \
    | grep -v "Warning\|Configuration class" | tail -60
