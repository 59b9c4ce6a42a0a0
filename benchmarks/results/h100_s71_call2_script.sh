# Session 71, call 2 (the machine of call 1, its caches kept): the step at batch 1 for this tree with the packed
# decode attention (GraphDecoder's default now) -- A/B against call 1's "this" with transformers' SDPA attention --
# then .diag/base (beb728e: before both fusions), for the gated down projection against call 1's head; then bf16's
# step both ways (the attention's change is every method's).
for run in this base; do
    dir=$PWD; [ $run != this ] && dir=$PWD/.diag/$run
    (cd $dir && HLWQ_CACHE_DIR=/tmp/hlwq_cache_$run PYTHONPATH=/tmp/site:$dir timeout 110 python3 \
        benchmarks/profile_step.py --methods hlwq-q5 --steps 16 > $OUT/step_${run}_2.log 2>&1)
    echo "$run: rc $? at ${SECONDS}s"
    grep -E "step|^ +(q|k|v|o|gate|up|down|q-k-v|gate-up) |^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_${run}_2.log | head -24
done
for flag in "" --stock-attention; do
    timeout 100 python3 benchmarks/profile_step.py --methods bf16 --steps 16 --top 8 $flag > $OUT/step_bf16$flag.log 2>&1
    echo "bf16 $flag: rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_bf16$flag.log | head -10
done
