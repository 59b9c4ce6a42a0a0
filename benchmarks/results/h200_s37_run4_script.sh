#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
timeout 250 python3 .diag/s37/determinism2.py > $OUT/determinism2.log 2>&1; echo "det rc $?"; grep -v Warn $OUT/determinism2.log | tail -8
