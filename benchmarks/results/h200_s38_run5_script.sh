#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
timeout 480 python3 .diag/s38/modes.py > $OUT/modes.log 2>&1; echo "rc $?"; grep -v "Warn\|warnings.warn\|escape sequence\|Configuration class" $OUT/modes.log | tail -12
