#!/usr/bin/env bash
# Session 36 run 2: direct C launches with kept TMA expansions, in_features without __torch_function__ -- GPU tests
# of the launch and the touched kernels, then host time old (ca67033, .diag/old) against new, interleaved.
cd "$(dirname "$0")/../.."
OLD="PYTHONPATH=/tmp/site:$PWD/.diag/old"
OMP_NUM_THREADS=2 timeout 200 python3 -m pytest -m gpu -n 8 tests/test_launch.py tests/test_kernels.py -p no:cacheprovider --tb=short -rA -k "launch or ws_rs or wsrs or split or graph or dependent or gemv" > $OUT/tests.log 2>&1; echo "tests rc $?"
grep -E "passed|failed|FAILED|Error" $OUT/tests.log | tail -8
for i in 1 2; do
  env $OLD timeout 90 python3 .diag/old/benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_old$i.log 2>&1; echo "old rc $?"
  timeout 90 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_new$i.log 2>&1; echo "new rc $?"
done
paste <(grep -v Warn $OUT/launch_old1.log) <(grep -v Warn $OUT/launch_new1.log | sed 's/^ *//') <(grep -v Warn $OUT/launch_old2.log | sed 's/^ *//') <(grep -v Warn $OUT/launch_new2.log | sed 's/^ *//') | grep -v "^\s*$" | cut -c1-250
for i in 1 2; do
  env $OLD timeout 120 python3 .diag/old/benchmarks/profile_prefill.py --methods hlwq-q5 --top 8 > $OUT/prefill_old$i.log 2>&1; echo "rc $?"
  timeout 120 python3 benchmarks/profile_prefill.py --methods hlwq-q5 --top 8 > $OUT/prefill_new$i.log 2>&1; echo "rc $?"
done
grep "== " $OUT/prefill_old1.log $OUT/prefill_new1.log $OUT/prefill_old2.log $OUT/prefill_new2.log
grep "hlwq::linear" $OUT/prefill_*.log | head -8
