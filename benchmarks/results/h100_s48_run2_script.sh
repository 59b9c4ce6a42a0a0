#!/usr/bin/env bash
# Session 48, call 2: test_tensor.py without xdist; then decode at batch 2 (M = 2 steps, where the tuner now times
# the GEMV beside the tensor-core kernels) on an empty tuning cache, bf16 and Q5, graph way; the cache's
# tuning_s per key says what the first call's tuning cost.
cd "$(dirname "$0")/../.."
t0=$SECONDS
timeout $1 python3 -m pytest tests/test_tensor.py -p no:cacheprovider --tb=short -rfE -q > $OUT/tests_tensor.log 2>&1
echo "test_tensor rc $? ($((SECONDS - t0)) s)"; grep -E "passed|failed|error" $OUT/tests_tensor.log | tail -5
export HLWQ_CACHE_DIR=/tmp/hlwq_cache_b2
rm -rf $HLWQ_CACHE_DIR
for m in bf16 hlwq-q5; do
  timeout $2 python3 benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 2 --methods $m \
    --json $OUT/decode_b2_$m.json > $OUT/decode_b2_$m.log 2>&1; echo "$m rc $?"; grep "^{" $OUT/decode_b2_$m.log
done
cp $HLWQ_CACHE_DIR/*.json $OUT/ 2>/dev/null; ls $OUT
python3 - <<'PY'
import glob, json
for f in glob.glob("/tmp/hlwq_cache_b2/*.json"):
    d = json.load(open(f))
    d = d.get("entries", d)
    t = {k: v for k, v in d.items() if k.endswith("/tuning_s")}
    for k, v in sorted(t.items()): print(k, v)
    print("total tuning_s", round(sum(t.values()), 1))
PY
