"""Run benchmarks/profile_prefill.py (of the tree on sys.path[0]'s side) with the garbage collector on or off, and
count its collections: python prefill_gc.py on|off ROOT -- ARGS."""
import gc
import runpy
import sys

mode, root = sys.argv[1], sys.argv[2]
sys.argv = [f"{root}/benchmarks/profile_prefill.py", *sys.argv[4:]]
counts = [0, 0, 0]
gc.callbacks.append(lambda phase, info: phase == "start" and counts.__setitem__(info["generation"], counts[info["generation"]] + 1))
if mode == "off":
    gc.disable()
runpy.run_path(sys.argv[0], run_name="__main__")
print(f"gc {mode}: collections by generation over the whole script {counts}", flush=True)
