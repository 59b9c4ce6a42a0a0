#!/usr/bin/env bash
# Session 34 run 2: host time of an eager HLWQ linear layer by layer, Triton's launch apart (baseline, 6d6c236).
cd "$(dirname "$0")/../.."
timeout 240 python3 benchmarks/profile_launch.py --m 1 2 16 128 > $OUT/launch.log 2>&1
echo "rc $?"
cat $OUT/launch.log | grep -v Warning
