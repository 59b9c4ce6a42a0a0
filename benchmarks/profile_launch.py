"""Host time of one eager HLWQ linear, layer by layer, down to its Triton launches.

    python benchmarks/profile_launch.py --m 1 16 128

For each M, on one Q5 weight (14336 x 4096 by default), microseconds of host
time per call (median of 5 rounds of ``--calls`` calls, GPU work queued and not
waited for) of each layer of the eager call chain, outermost first:

- ``F.linear`` on the HLWQTensor (what a model runs) and on a bf16 weight,
- ``ops.linear_call`` (no subclass), ``ops._linear_cuda`` (no fast-path test),
  ``kernels.linear`` (no argument checks),
- the Triton launches that call makes, replayed as they were made
  (``JITFunction.run``: Triton's binder, specialization, cache key and
  launcher), and replayed straight into each compiled kernel's Python
  launcher (:func:`run_launcher`: what Triton's binding adds is the
  difference; the library's own direct launch, ``launch.DirectLaunch``, also
  skips that Python launcher and calls the C one),
- ``torch.empty`` of the output,
- pieces of ``kernels.linear``: the argument checks, the path decisions,
  ``tuning.config_for``, and the kernel wrappers the call ran (``gemv``, or
  ``fwht`` and ``ws_rs``) with their config given.

``--triton-launch`` launches through ``JITFunction.run`` every time (the
direct launches of :class:`hlwq_ops.kernels.launch.Launch` off; the wrappers'
plans still on).

Not a benchmark of the GPU: nothing here waits for a kernel.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
from triton.runtime.jit import JITFunction

import hlwq_ops
from hlwq_ops import kernels, ops
from hlwq_ops.kernels import launch as launch_module
from hlwq_ops.kernels import tuning

sys.path.insert(0, os.path.dirname(__file__))
from profile_host import host_us  # noqa: E402


def record_launches(fn) -> list[tuple]:
    """The Triton launches one call of ``fn`` makes: (jit function, args, kwargs, compiled kernel)."""
    made = []
    original = JITFunction.run

    def recording(self, *args, grid, warmup, **kwargs):
        kernel = original(self, *args, grid=grid, warmup=warmup, **kwargs)
        if not warmup:
            made.append((self, args, dict(kwargs, grid=grid), kernel))
        return kernel

    JITFunction.run = recording
    direct, launch_module._DIRECT = launch_module._DIRECT, False  # every launch through JITFunction.run, seen
    try:
        fn()
    finally:
        JITFunction.run = original
        launch_module._DIRECT = direct
    return made


def replay_jit(made) -> None:
    for fn, args, kwargs, _ in made:
        fn.run(*args, warmup=False, **kwargs)


def run_launcher(compiled, grid: tuple, values: tuple) -> None:
    """Call a compiled kernel's (Python) launcher on the current stream: ``values`` are all of the kernel's arguments
    in signature order, constexprs included (the launcher skips them); no launch hooks."""
    g = tuple(grid) + (1, 1)
    stream = torch._C._cuda_getCurrentRawStream(torch.cuda.current_device())
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None, None, None, *values)


def direct_launchers(made) -> list:
    """For each launch, a no-argument function calling its compiled kernel's launcher with the same arguments."""
    out = []
    for fn, args, kwargs, kernel in made:
        bound = fn.signature.bind(*args, **{k: v for k, v in kwargs.items() if k in fn.arg_names})
        bound.apply_defaults()
        values, grid = tuple(bound.arguments.values()), kwargs["grid"]
        out.append(lambda kernel=kernel, grid=grid, values=values: run_launcher(kernel, grid, values))
    return out


def pieces(x, q, M: int, N: int, K: int) -> dict:
    """Parts of ``kernels.linear``'s work, each alone (the tuned config given to the wrappers)."""
    qd, sc, bits = q.qdata, q.scale, q.bits
    k_pad = sc.shape[1] * q.block_size
    x2 = x.reshape(-1, K)
    out = {
        "ops._check_linear": lambda: ops._check_linear(x, qd, sc, None, bits, 128, K, None),
        "ops._plain_eager": lambda: ops._plain_eager(x, qd, None),
        "path decisions": lambda: tuning.path_for(M, kernels.supports(bits, 128, None, x.dtype),
                                                  kernels._runs_ws(qd, bits, 128, None, x.dtype)),
    }
    for key, config in tuning.tuned_choices(M, N, k_pad, bits).items():
        family = key.split("/")[0]
        out[f"tuning.config_for({family})"] = lambda family=family: tuning.config_for(family, M, N, k_pad, bits,
                                                                                      (qd, sc), None)
        if config.get("kernel") == "wsrs":
            span = kernels.activation_span(config)
            xp = kernels.as_operand(kernels.fwht(x2, 128, x.dtype, 8, span, True))
            out["fwht (per_word 8)"] = lambda: kernels.fwht(x2, 128, x.dtype, 8, span, True)
            out["ws_rs"] = lambda config=config: kernels.ws_rs(xp, qd, sc, None, bits, 128, x.dtype, config, True)
        elif config.get("kernel", family) == "gemv":  # (the GEMV's own key, or where it competes: M = 2, small layers to 8)
            out["gemv"] = lambda config=config: kernels.gemv(x2, qd, sc, None, bits, 128, None, x.dtype, config,
                                                             rotate=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", nargs="+", type=int, default=[1, 16, 128])
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--triton-launch", action="store_true", help="every launch through JITFunction.run")
    a = p.parse_args()
    if a.triton_launch:
        launch_module._DIRECT = False
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{time.strftime('%Y-%m-%d')}, {a.shape} Q{a.bits}", flush=True)
    N, K = map(int, a.shape.split("x"))
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
    q = hlwq_ops.HLWQTensor.from_hp(w, a.bits)
    args = (q.qdata, q.scale, None, q.bits, q.block_size, K, None)
    with torch.no_grad():
        for M in a.m:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            F.linear(x, q)  # tunes
            made = record_launches(lambda: kernels.linear(x, *args))
            direct = direct_launchers(made)
            layers = {
                "F.linear, HLWQTensor": lambda: F.linear(x, q),
                "F.linear, bf16 weight": lambda: F.linear(x, w),
                "ops.linear_call": lambda: ops.linear_call(x, *args),
                "ops._linear_cuda": lambda: ops._linear_cuda(x, *args),
                "kernels.linear": lambda: kernels.linear(x, *args),
                f"its {len(made)} launches, JITFunction.run": lambda: replay_jit(made),
                f"its {len(made)} launches, launcher only": lambda: [launch() for launch in direct],
                "torch.empty (M, N)": lambda: torch.empty((M, N), device="cuda", dtype=x.dtype),
            }
            layers.update(pieces(x, q, M, N, K))
            names = ", ".join(fn.__name__ if hasattr(fn, "__name__") else str(fn) for fn, *_ in made)
            print(f"\nM = {M}: launches {names}", flush=True)
            for name, fn in layers.items():
                print(f"  {name:<36} {host_us(fn, a.calls):7.1f} us", flush=True)


if __name__ == "__main__":
    main()
