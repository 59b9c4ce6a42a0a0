# Session 65, call 3 (NOTES 65): Llama-3-8B shape, batch 1, the CUDA-graph way, one process per method: torchao int4
# as its config runs it (Inductor's settings set for the process) and with set_inductor_config=False, beside bf16
# and Q5, on one H100. Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s65_call3_script.sh
# (After this call the option's value `default` was renamed `unchanged` and made the default.)
set -x
for run in int4:torchao:130 int4:default:100 hlwq-q5:torchao:120 bf16:torchao:90; do
  IFS=: read -r method setting limit <<< "$run"
  timeout "$limit" python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 --methods "$method" \
    --int4-inductor "$setting" --json "$OUT/decode_llama_b1_${method}_${setting}.json" 2>&1 \
    | grep -v "^\s*warnings.warn\|UserWarning" | tail -2
done
