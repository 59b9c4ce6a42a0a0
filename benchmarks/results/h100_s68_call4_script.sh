# Session 68, call 4: the whole GPU suite on the tree with EARLY offered at Q5 on every shape (call 2's run of the
# candidate tests was cut by its 110 s timeout after 26 of 39).
OMP_NUM_THREADS=2 timeout 480 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -15
