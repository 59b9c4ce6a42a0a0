#!/usr/bin/env bash
# Session 46, call 3: test_tensor.py again after the autocast test's dynamo reset (call 2: it hit the recompile
# limit in the file run), then diag_compiled_gemv.py part c with 2 layers (NOTES 43 Next 2, never run).
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=4
t0=$SECONDS
timeout 150 python3 -m pytest tests/test_tensor.py -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_tensor.log 2>&1
echo "test_tensor rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|FAILED|ERROR" $OUT/tests_tensor.log | tail -8
t0=$SECONDS
timeout 380 python3 benchmarks/diag_compiled_gemv.py c 2 > $OUT/diag_c2.log 2>&1
echo "diag c 2 rc $? ($((SECONDS - t0)) s)"; grep -v "Warn\|warn(" $OUT/diag_c2.log | tail -40
