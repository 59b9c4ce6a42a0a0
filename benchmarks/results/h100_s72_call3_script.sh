# Session 72, call 3 (call 2's machine, its tuning caches kept): the Q5 step with transformers' attention and Inductor's
# combo kernels; bf16's step with transformers' attention (call 2's timed out at 70 s), without and with combo kernels.
HLWQ_CACHE_DIR=/tmp/hlwq_cache_d_hlwq-q5 timeout 100 python3 benchmarks/profile_step.py --methods hlwq-q5 --steps 16 --stock-attention --inductor combo_kernels=True > $OUT/step_q5_stock_combo.log 2>&1
echo "q5 stock combo rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_q5_stock_combo.log | head -16
timeout 130 python3 benchmarks/profile_step.py --methods bf16 --steps 16 --top 8 --stock-attention > $OUT/step_bf16_stock.log 2>&1
echo "bf16 stock rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_bf16_stock.log | head -10
timeout 130 python3 benchmarks/profile_step.py --methods bf16 --steps 16 --top 8 --stock-attention --inductor combo_kernels=True > $OUT/step_bf16_stock_combo.log 2>&1
echo "bf16 stock combo rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_bf16_stock_combo.log | head -10
