set -x
timeout 570 python3 benchmarks/bench_decode.py --models qwen3.5-9b --ways graph --batches 1 8 --methods int4 --json "$OUT/decode_qwen35_int4.json" 2>&1 | grep -v "^\s*warnings.warn\|UserWarning" | tail -40
