#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
PYTHONPATH=/tmp/site:$PWD/.diag/old timeout 150 python3 .diag/s37/control.py > $OUT/control.log 2>&1; echo "rc $?"; grep -v Warn $OUT/control.log | tail -8
