"""Session 67: offline SASS (Triton 3.6, sm_90) of the GEMV at Q5 against its copy reading the contiguous 40-bit
layout (``benchmarks/diag_contig5.py``): registers and the loop's instruction mix, large-shape tile (VEC 4, R 8,
split K) and the small-shape tile (VEC 16, R 4, EARLY, one slice).

    PYTHONPATH=<Triton 3.6 site> python benchmarks/results/cpu_s67_contig5_sass.py
"""

import sys

sys.path.insert(0, "benchmarks")
import diag_contig5  # noqa: E402
import diag_variants  # noqa: E402
import offline_sass  # noqa: E402

for name, edits in (("base", []), ("contig5", diag_contig5.VARIANT)):
    diag_variants.build(name, edits)
    offline_sass._gemv_kernel = sys.modules[f"{name}.kernels.gemv"]._gemv_kernel
    for label, args in (("VEC 4 R 8 split", dict(bits=5, vec=4, r=8, warp_parts=1, split=True)),
                        ("VEC 16 R 4 EARLY", dict(bits=5, vec=16, r=4, warp_parts=1, split=False, early=True))):
        sass, usage = offline_sass._inspect(offline_sass.compile_gemv(**args))
        loop = offline_sass.loop_mix(sass)
        top = ", ".join(f"{k} {v}" for k, v in loop.most_common(8))
        print(f"{name:8s} {label:18s} {usage} loop {sum(loop.values())}: {top}", flush=True)
