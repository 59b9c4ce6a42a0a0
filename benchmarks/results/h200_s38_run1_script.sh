#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
timeout 420 python3 .diag/s38/det.py > $OUT/det.log 2>&1; echo "rc $?"; grep -v Warn $OUT/det.log | grep -v "warnings.warn\|escape sequence\|Configuration class" | tail -40
