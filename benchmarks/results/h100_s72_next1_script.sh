# Written in session 72 for the next GPU call: the whole GPU suite (sessions 69-72's changes have run only in part on a
# GPU: session 72's call 1 cut its two subsets at 130 s each), in parallel workers; each test compiles, so the timeout
# is the call's.
OMP_NUM_THREADS=2 timeout 540 python3 -m pytest -q -p no:cacheprovider --tb=short -rfE -n 4 -m gpu tests \
    > $OUT/gpu_tests.log 2>&1
echo "gpu tests rc $? at ${SECONDS}s"
grep -v "Warning\|warner" $OUT/gpu_tests.log | tail -30
