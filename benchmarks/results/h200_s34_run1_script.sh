#!/usr/bin/env bash
# Session 34 run 1: host time per eager HLWQ linear (baseline), where it goes; eager prefill wall vs GPU busy.
cd "$(dirname "$0")/../.."
timeout 200 python3 benchmarks/profile_host.py --m 1 16 128 --top 45 > $OUT/host.log 2>&1
echo "host rc $?"
timeout 300 python3 benchmarks/profile_prefill.py --methods bf16 hlwq-q5 --top 25 > $OUT/prefill.log 2>&1
echo "prefill rc $?"
grep -E "us host per call|== " $OUT/host.log $OUT/prefill.log
