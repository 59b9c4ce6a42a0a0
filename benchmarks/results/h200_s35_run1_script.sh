#!/usr/bin/env bash
# Session 35 run 1: where an eager HLWQ linear's host time goes now (cProfile), and compiled generate()'s per-token host time (baseline).
cd "$(dirname "$0")/../.."
git log --oneline -1
timeout 120 python3 benchmarks/profile_host.py --m 1 16 128 --top 45 > $OUT/host.log 2>&1; echo "rc $?"
grep -v Warn $OUT/host.log | head -250
timeout 300 python3 benchmarks/profile_generate.py --methods hlwq-q5 bf16 --tokens 32 --top 30 > $OUT/generate.log 2>&1; echo "rc $?"
grep -v Warn $OUT/generate.log | head -150
