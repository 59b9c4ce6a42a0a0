# Session 66, call 4: quantize_ref's search on the GPU, session 65's against this session's (bucketize in both).
python3 benchmarks/results/h100_s66_call4_quant.py
