# Session 66, call 1 (a fresh H100): the grid search's GPU tests, its time against bucketize's on the GPU, then the
# whole GPU suite.
OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider tests/test_nearest.py tests/test_format.py --tb=short -rfE 2>&1 | tail -5
python3 benchmarks/results/h100_s66_call1_quant.py
OMP_NUM_THREADS=2 timeout 420 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -25
