#!/usr/bin/env bash
# Session 35 run 2: plans per call signature (gemv, fwht, ws_rs, split-K sum; kernels.launch.Launch) against
# HEAD 0c1d90b (.diag/old) -- the GPU tests of the touched kernels, host time layer by layer (old, new, old, new),
# the eager prefill (old, new).
cd "$(dirname "$0")/../.."
OLD="PYTHONPATH=/tmp/site:$PWD/.diag/old"
OMP_NUM_THREADS=2 timeout 240 python3 -m pytest -m gpu -n 8 tests/test_launch.py tests/test_kernels.py -p no:cacheprovider --tb=short -rA -k "launch or gemv or fwht or ws_rs or wsrs or split or graph or dependent or plan" > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/tests.log | tail -6
for i in 1 2; do
  env $OLD timeout 90 python3 .diag/old/benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_old$i.log 2>&1; echo "old rc $?"
  timeout 90 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_new$i.log 2>&1; echo "new rc $?"
done
paste <(grep -v Warn $OUT/launch_old1.log) <(grep -v Warn $OUT/launch_new1.log | sed 's/^ *//') <(grep -v Warn $OUT/launch_old2.log | sed 's/^ *//') <(grep -v Warn $OUT/launch_new2.log | sed 's/^ *//') | grep -v "^\s*$" | cut -c1-250
env $OLD timeout 120 python3 .diag/old/benchmarks/profile_prefill.py --methods hlwq-q5 bf16 --top 8 > $OUT/prefill_old.log 2>&1; echo "rc $?"
timeout 120 python3 benchmarks/profile_prefill.py --methods hlwq-q5 bf16 --top 8 > $OUT/prefill_new.log 2>&1; echo "rc $?"
grep "== " $OUT/prefill_old.log $OUT/prefill_new.log
