# Session 63, call 2 (NOTES 63): the GPU suite again on the warm machine of call 1 (whose suite ran out of its 330 s)
OMP_NUM_THREADS=2 bash benchmarks/gpu_run.sh timeout 300 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=line -rfE -q
