#!/usr/bin/env bash
# Session 36 run 1: where an eager HLWQ F.linear's host time goes now (HEAD ca67033), pinned to one core.
cd "$(dirname "$0")/../.."
lscpu | grep -E "Model name|MHz|^CPU\(s\)" ; grep MHz /proc/cpuinfo | head -4
taskset -c 5 timeout 120 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_a.log 2>&1; echo "rc $?"
taskset -c 5 timeout 120 python3 benchmarks/profile_launch.py --m 1 16 128 > $OUT/launch_b.log 2>&1; echo "rc $?"
paste <(grep -v Warn $OUT/launch_a.log) <(grep -v Warn $OUT/launch_b.log | sed 's/^ *//') | grep -v "^\s*$" | cut -c1-200
taskset -c 5 timeout 120 python3 .diag/s36/prof_cum.py 1 16 128 > $OUT/prof_cum.log 2>&1; echo "rc $?"
grep MHz /proc/cpuinfo | head -4
for i in 1 2; do taskset -c 5 timeout 150 python3 benchmarks/profile_prefill.py --methods hlwq-q5 bf16 --top 6 > $OUT/prefill_$i.log 2>&1; echo "rc $?"; grep "== " $OUT/prefill_$i.log; done
