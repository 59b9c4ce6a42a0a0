#!/usr/bin/env bash
# Session 35 run 3: the whole GPU suite on the plans; the eager prefill again, new and old (.diag/old = 0c1d90b)
# alternating, new first (run 2 ran old first).
cd "$(dirname "$0")/../.."
OLD="PYTHONPATH=/tmp/site:$PWD/.diag/old"
OMP_NUM_THREADS=2 timeout 400 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rA --durations=12 > $OUT/gpu_tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/gpu_tests.log | tail -6
for i in 1 2; do
  timeout 60 python3 benchmarks/profile_prefill.py --methods hlwq-q5 --top 3 > $OUT/prefill_new$i.log 2>&1; echo "rc $?"
  env $OLD timeout 60 python3 .diag/old/benchmarks/profile_prefill.py --methods hlwq-q5 --top 3 > $OUT/prefill_old$i.log 2>&1; echo "rc $?"
done
timeout 60 python3 benchmarks/profile_prefill.py --methods bf16 --top 3 > $OUT/prefill_bf16.log 2>&1; echo "rc $?"
grep "== " $OUT/prefill_*.log
