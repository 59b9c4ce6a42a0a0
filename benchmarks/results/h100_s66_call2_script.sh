# Session 66, call 2: the grid search's tests on the GPU as the code now stands (bucketize there), then where the
# M = 1 GEMV's split-K epilogue stands (diag_variants: the kernel as it is, without its epilogue, without its sum).
OMP_NUM_THREADS=2 python3 -m pytest -q -p no:cacheprovider tests/test_nearest.py tests/test_format.py --tb=short -rfE 2>&1 | tail -2
cd benchmarks && python3 diag_variants.py --shapes 14336x4096 4096x14336 4096x4096 --bits 5 --variants base no_epilogue no_sum
