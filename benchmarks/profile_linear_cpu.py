"""Host time of ``hlwq_ops.kernels.linear`` on a machine without a GPU: its Python, every launch stubbed out.

On CPU tensors ``kernels.linear`` runs the same Python as on the GPU's GEMV path up to the launch (the plan, the
output, the workspace, the counters' region), with two differences made up here: the launch is replaced by a no-op,
and the tuned config is served from a dict as the GPU's hot path does (on the CPU ``tuning.config_for`` would list
the candidates every call). Prints microseconds per call (best of five rounds) and, with ``--profile``, cProfile's
functions by own time::

    python benchmarks/profile_linear_cpu.py [--m 1] [--shape 14336x4096] [--family wsrs] [--profile]
    python benchmarks/profile_linear_cpu.py --group 4096 1024 1024 [--shape 4096x4096]
    python benchmarks/profile_linear_cpu.py --group 4096 1024 1024 --siblings --m 8 --family wgmma

With ``--family`` the calls take the tensor-core path (M past the GEMV's), served that family's favourite config.
With ``--group`` (rows of each weight; ``--shape``'s K) it times ``kernels.linear_group`` on those weights against
each weight's ``kernels.linear``, each with and without the CUDA ops' argument checks (with them: the ops
``hlwq.linear_group`` and ``hlwq.linear_inference`` less the dispatcher); with ``--siblings`` too,
``kernels.linear_siblings`` in place of ``kernels.linear_group`` (``hlwq.linear_siblings``).

A CPU's own speed sets the scale: the H200 machine's CPU ran this library's Python about twice as slowly
(``benchmarks/NOTES.md`` sessions 36-37).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import timeit
from typing import Callable

os.environ.setdefault("HLWQ_AUTOTUNE", "0")

import torch  # noqa: E402

from hlwq_ops import kernels, ops  # noqa: E402
from hlwq_ops.kernels import launch, tuning  # noqa: E402


def serve_configs_from_a_dict() -> None:
    """``tuning.config_for`` as a GPU runs it once tuned: the key, then one dict lookup."""
    served, first = {}, tuning.config_for

    def config_for(kernel, M, N, k_pad, bits, weight, run, device=None):
        key = tuning.key_for(kernel, M, N, k_pad, bits, device or weight[0].device)
        if key not in served:
            served[key] = first(kernel, M, N, k_pad, bits, weight, run, device)
        return served[key]

    tuning.config_for = config_for


def serve_family(family: str) -> None:
    """The GPU's tensor-core path on the CPU: the warp-specialized kernels "run" this layer (their launches are
    stubbed too) and every tensor-core call gets ``family``'s favourite config, as if the tuner had chosen it."""
    served = {}
    kernels._runs_ws = lambda *args: True

    def config_for(kernel, M, N, k_pad, bits, weight, run, device=None):
        key = tuning.key_for(kernel, M, N, k_pad, bits, device or weight[0].device)
        if key not in served:
            served[key] = tuning.candidates(family if kernel != "gemv" else kernel, M, N, k_pad, 132, bits)[0]
        return served[key]

    tuning.config_for = config_for


def per_call_us(fn, number: int = 3000) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", nargs="+", type=int, default=[1])
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--family", choices=("wsrs", "tc", "wgmma"),
                   help="time the tensor-core path with this family's favourite config (M past the GEMV's)")
    p.add_argument("--group", nargs="+", type=int, help="rows of each weight of a group (K from --shape)")
    p.add_argument("--siblings", action="store_true", help="with --group: time kernels.linear_siblings instead")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    launch.Launch.__call__ = lambda self, *args: None
    serve_family(a.family) if a.family else serve_configs_from_a_dict()
    torch.manual_seed(0)
    N, K = map(int, a.shape.split("x"))
    if a.group:
        time_group(a.group, K, a.m, a.profile, a.siblings)
        return
    q, s = torch.ops.hlwq.quantize(torch.randn(N, K) * 0.02, 5, 128)
    print(f"torch {torch.__version__}, Q5 {N} x {K}, launches stubbed")
    for M in a.m:
        x = torch.randn(M, K, dtype=torch.bfloat16)
        fast = kernels.supports(5, 128, None, x.dtype)
        path = tuning.path_for(M, fast, a.family is not None)
        if path != ("mma" if a.family or tuning.gemv_competes(M, N, K) else "gemv"):  # (the GEMV's favourite)
            print(f"M = {M}: the {path} path on the CPU is not the GPU's; skipped")
            continue
        call = lambda x=x: kernels.linear(x, q, s, None, 5, 128, K, None)  # noqa: E731
        check = lambda x=x: ops._check_linear(x, q, s, None, 5, 128, K, None)  # noqa: E731
        print(f"M = {M}: kernels.linear {per_call_us(call):.1f} us a call, ops._check_linear {per_call_us(check):.1f}")
        if a.profile:
            print_profile(call)


def print_profile(call: Callable[[], object]) -> None:
    """cProfile's twelve functions of most own time over 3000 calls."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(3000):
        call()
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


def time_group(rows: list[int], K: int, ms: list[int], profile: bool, siblings: bool = False) -> None:
    """``--group``: one grouped call (``siblings``: ``kernels.linear_siblings``'s) against each weight's call, with
    the CUDA ops' argument checks."""
    weights = [(*torch.ops.hlwq.quantize(torch.randn(n, K) * 0.02, 5, 128), None, None) for n in rows]
    qs, ss, bs, cs = map(list, zip(*weights))
    op = "linear_siblings" if siblings else "linear_group"
    print(f"torch {torch.__version__}, Q5 {op} {' + '.join(map(str, rows))} x {K}, launches stubbed")
    for M in ms:
        x = torch.randn(M, K, dtype=torch.bfloat16)

        def grouped(x=x, checks=True):
            if checks:
                ops._check_linear_group(x, qs, ss, bs, 5, 128, K, cs, op)
            return getattr(kernels, op)(x, weights, 5, 128, K)

        def each(x=x, checks=True):
            for q, s, b, c in weights:
                if checks:
                    ops._check_linear(x, q, s, b, 5, 128, K, c)
                kernels.linear(x, q, s, b, 5, 128, K, c)

        for checks in (True, False):
            print(f"M = {M}, argument checks {'in' if checks else 'out'}: grouped "
                  f"{per_call_us(lambda: grouped(checks=checks)):.1f} us a call, each weight's calls "
                  f"{per_call_us(lambda: each(checks=checks)):.1f}")
        if profile:
            print_profile(grouped)


if __name__ == "__main__":
    main()
