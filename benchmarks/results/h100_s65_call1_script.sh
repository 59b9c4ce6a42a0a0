# Session 65, call 1 (NOTES 65): the whole GPU suite on main as session 64 left it (its Bloom skips moved and
# the `as_words` checks on every kernel path had only run in parts on a GPU). Run from the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s65_call1_script.sh
set -x
OMP_NUM_THREADS=2 timeout 450 python3 -m pytest -m gpu -n 8 tests -p no:cacheprovider --tb=short -rfE -q 2>&1 | tail -30
