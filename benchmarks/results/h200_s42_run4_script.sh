#!/usr/bin/env bash
# Session 42, call 4: what stays allocated and what is live at the warm-up peak, bf16 and Q5.
cd "$(dirname "$0")/../.."
timeout 330 python3 .diag/s42/mem_resident.py hlwq-q5 bf16 > $OUT/mem_resident.log 2>&1; echo "mem rc $?"; grep -v "Warn\|warn(" $OUT/mem_resident.log | tail -70
