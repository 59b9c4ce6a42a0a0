# Session 72, call 4 (the same machine): torchao int4's step with transformers' attention and combo kernels.
timeout 150 python3 benchmarks/profile_step.py --methods int4 --steps 16 --top 8 --stock-attention --inductor combo_kernels=True > $OUT/step_int4_stock_combo.log 2>&1
echo "int4 stock combo rc $? at ${SECONDS}s"; grep -E "step|^ +[0-9.]+ +[0-9.]+ +[0-9.]+  " $OUT/step_int4_stock_combo.log | head -10
