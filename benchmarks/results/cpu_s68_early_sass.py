"""Session 68: offline SASS (Triton 3.6, sm_90) of the GEMV tiles call 1 timed, with and without ``EARLY``, at Q5 and
Q4: registers, the loop's length and how far each codebook shuffle sits from the FFMA it feeds (the last lines of
``benchmarks/offline_sass.py``'s report).

    PYTHONPATH=<Triton 3.6 site> python benchmarks/results/cpu_s68_early_sass.py
"""

import subprocess
import sys

TILES = ("--vec 16 --r 4 --warp-parts 4", "--vec 4 --r 8 --split", "--vec 16 --r 8 --warp-parts 4",
         "--vec 16 --r 2 --warp-parts 4")
for bits in (5, 4):
    for tile in TILES:
        for early in ("", " --early"):
            args = f"--bits {bits} {tile}{early}"
            out = subprocess.run([sys.executable, "benchmarks/offline_sass.py", *args.split()], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
            keep = [line for line in out if line.startswith(("loop:", "FFMAs fed")) or "REG:" in line]
            print(f"== Q{bits} {tile}{early}", *keep, sep="\n  ", flush=True)
