#!/usr/bin/env bash
# Session 42, call 1: the element-dense Q5 arrangement timed; what is live at a steady GraphDecoder call's peak.
cd "$(dirname "$0")/../.."
timeout 300 python3 benchmarks/diag_dense5.py --json $OUT/diag_dense5.json > $OUT/dense5.log 2>&1; echo "dense5 rc $?"; grep -v "Warn\|warn(" $OUT/dense5.log | tail -30
timeout 230 python3 .diag/s42/mem_peak.py bf16 hlwq-q5 > $OUT/mem_peak.log 2>&1; echo "mem rc $?"; grep -v "Warn\|warn(" $OUT/mem_peak.log | tail -40
