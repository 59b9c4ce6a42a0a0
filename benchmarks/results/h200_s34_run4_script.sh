#!/usr/bin/env bash
# Session 34 run 4: launch.launch's direct launches (hook check fixed) against Triton's launch in one run: host time
# layer by layer, and the eager 128-token prefill of the Llama-3-8B shape (Q5 both ways, bf16 once).
cd "$(dirname "$0")/../.."
timeout 100 python3 benchmarks/profile_launch.py --m 1 16 128 --triton-launch > $OUT/launch_triton.log 2>&1; echo "rc $?"
timeout 100 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_direct.log 2>&1; echo "rc $?"
paste <(grep -v Warn $OUT/launch_triton.log) <(grep -v Warn $OUT/launch_direct.log | sed 's/^ *//') | cut -c1-150
timeout 150 python3 -c "
import runpy, sys
import hlwq_ops.kernels.launch as L
L._DIRECT = False
sys.argv = ['profile_prefill.py', '--methods', 'hlwq-q5', 'bf16', '--top', '12']
runpy.run_path('benchmarks/profile_prefill.py', run_name='__main__')" > $OUT/prefill_triton.log 2>&1; echo "rc $?"
timeout 120 python3 benchmarks/profile_prefill.py --methods hlwq-q5 --top 12 > $OUT/prefill_direct.log 2>&1; echo "rc $?"
grep "== " $OUT/prefill_triton.log $OUT/prefill_direct.log
