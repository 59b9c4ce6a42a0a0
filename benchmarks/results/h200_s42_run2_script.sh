#!/usr/bin/env bash
# Session 42, call 2: the eager forwards resolved vs unresolved in one process; the eager F.linear's host time.
cd "$(dirname "$0")/../.."
timeout 330 python3 .diag/s42/prefill_ab.py hlwq-q5 bf16 > $OUT/prefill_ab.log 2>&1; echo "prefill rc $?"; grep -v "Warn\|warn(" $OUT/prefill_ab.log | tail -12
timeout 90 python3 benchmarks/profile_host.py --m 1 2 8 16 128 --top 12 > $OUT/host.log 2>&1; echo "host rc $?"; grep -v "Warn\|warn(" $OUT/host.log | head -40
