# Session 66, call 1 (a fresh H100): the grid search's GPU tests, then its time against bucketize's on the GPU.
OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider tests/test_nearest.py tests/test_format.py --tb=short -rfE 2>&1 | tail -5
python3 benchmarks/results/h100_s66_call1_quant.py
