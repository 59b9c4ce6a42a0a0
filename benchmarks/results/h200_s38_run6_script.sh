#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
timeout 190 python3 .diag/s38/modes.py > $OUT/modes6.log 2>&1; echo "rc $?"; grep -v "Warn\|warnings.warn\|escape sequence\|Configuration class" $OUT/modes6.log | tail -12
