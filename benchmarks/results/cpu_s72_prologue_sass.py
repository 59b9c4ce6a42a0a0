# The GEMV's instructions before its main loop (the prologue), offline (Triton 3.6, sm_90): Q5 VEC 16 R 4, four parts.
import sys
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import offline_sass as o
cases = [dict(early=True, group=3, norm=0), dict(early=True, group=3, norm=1), dict(early=True, group=3, norm=2),
         dict(early=True, group=2, norm=1), dict(glu=True)]
for c in cases:
    sass, regs = o._inspect(o.compile_gemv(5, 16, 4, 4, False, **c))
    ins, loops = o._instructions(sass)
    lo, hi = o._main_loop(ins, loops)
    pro, loop = o._mix(ins, 0, lo - 1), o._mix(ins, lo, hi)
    print(f"{c}: {regs}; {sum(pro.values())} instructions before the loop, {sum(loop.values())} in it; before: "
          + " ".join(f"{op}:{n}" for op, n in pro.most_common(12)))
