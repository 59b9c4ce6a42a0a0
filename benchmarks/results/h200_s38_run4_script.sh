#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
timeout 420 python3 .diag/s38/default_mode.py > $OUT/default_mode.log 2>&1; echo "rc $?"; grep -v "Warn\|warnings.warn\|escape sequence\|Configuration class" $OUT/default_mode.log | tail -12
