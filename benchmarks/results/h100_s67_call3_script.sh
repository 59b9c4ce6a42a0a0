# Session 67, call 3: every GEMV candidate of the tuner with and without EARLY on a large shape (Q5, M = 1), the
# kernel as it is (diag_early.py also times the tensor-core GEMV's candidates at M = 1). One shape: the device time
# left after eight failed or refused requests.
cd benchmarks
timeout 150 python3 diag_early.py --shapes 14336x4096 --bits 5 --m 1 --json $OUT/s67_early.json
