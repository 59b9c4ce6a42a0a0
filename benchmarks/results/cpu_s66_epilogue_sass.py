"""Session 66: offline SASS (Triton 3.6, sm_90) of the GEMV (Q5, VEC 4, R 8, split K) and its diag_variants copies
without the epilogue, without the sum, without the CTA barrier: registers, the loop's and the kernel's instruction
counts, and the epilogue's atomics, fences and barriers.

    PYTHONPATH=<Triton 3.6 site> python benchmarks/results/cpu_s66_epilogue_sass.py
"""

import sys

sys.path.insert(0, "benchmarks")
import diag_variants  # noqa: E402
import offline_sass  # noqa: E402

# no_barrier: arrive's debug_barrier taken out (a variant of session 66's call 3, dropped from diag_variants.py after
# this showed it compiles to the kernel's own SASS)
VARIANTS = dict(diag_variants.VARIANTS, no_barrier=[
    ("common.py", "    tl.debug_barrier()  # every partial of this program is stored before the release below\n", "")])
for name in ("base", "no_epilogue", "no_sum", "no_barrier"):
    diag_variants.build(name, VARIANTS[name])
    offline_sass._gemv_kernel = sys.modules[f"{name}.kernels.gemv"]._gemv_kernel
    sass, usage = offline_sass._inspect(offline_sass.compile_gemv(5, 4, 8, 1, True))
    loop, whole = offline_sass.loop_mix(sass), offline_sass.loop_mix(sass, None)
    print(name, usage, "loop", sum(loop.values()), "kernel", sum(whole.values()),
          "ATOM", whole["ATOM"] + whole["ATOMG"], "MEMBAR", whole["MEMBAR"], "BAR", whole["BAR"])
