"""Host (CPU) time per HLWQ linear call, layer by layer, and where it goes (cProfile).

    python benchmarks/profile_host.py --m 1 8 128

Eager calls (no CUDA graph) pay the host time of every layer between
``F.linear`` and the kernel launches: the tensor subclass's dispatch, the
custom op's dispatcher (skipped by a plain no-grad eager call since session
7, :func:`hlwq_ops.ops.linear_call`), the kernel family's Python, Triton's
launcher. For each
M this times, on one Q5 14336 x 4096 weight, microseconds of host time per call
(calls are queued without synchronizing; the GPU runs behind):

- ``F.linear`` on a bf16 weight (the baseline),
- ``F.linear`` on the HLWQTensor (what a model calls),
- ``torch.ops.hlwq.linear`` (no subclass),
- ``torch.ops.hlwq.linear_inference`` (what a compiled graph calls, through the dispatcher without an autograd
  kernel),
- ``hlwq_ops.kernels.linear`` (no custom op),

then runs cProfile over the calls of ``--profile`` (default: ``F.linear`` on the HLWQTensor) and prints the
functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch
import torch.nn.functional as F

import hlwq_ops
from hlwq_ops import kernels


def host_us(fn, calls: int = 300) -> float:
    """Median over 5 rounds of host microseconds per call (GPU work queued, not waited for)."""
    fn()
    torch.cuda.synchronize()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append(1e6 * (time.perf_counter() - start) / calls)
        torch.cuda.synchronize()
    return sorted(rounds)[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", nargs="+", type=int, default=[1, 8, 128])
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--profile", choices=("F.linear", "linear_inference"), default="F.linear",
                   help="the calls cProfile watches: F.linear on the HLWQTensor, or the op a compiled graph calls")
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    N, K = map(int, a.shape.split("x"))
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
    q = hlwq_ops.HLWQTensor.from_hp(w, 5)
    with torch.no_grad():
        for M in a.m:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            layers = {
                "bf16 F.linear": lambda: F.linear(x, w),
                "HLWQ F.linear": lambda: F.linear(x, q),
                "torch.ops.hlwq.linear": lambda: torch.ops.hlwq.linear(x, q.qdata, q.scale, None, 5, 128, K, None),
                "linear_inference": lambda: torch.ops.hlwq.linear_inference.default(
                    x, q.qdata, q.scale, None, 5, 128, K, None),
                "kernels.linear": lambda: kernels.linear(x, q.qdata, q.scale, None, 5, 128, K, None),
            }
            for name, fn in layers.items():
                print(f"M={M:<4} {name:<24} {host_us(fn):8.1f} us host per call", flush=True)
            profiled = layers["HLWQ F.linear" if a.profile == "F.linear" else "linear_inference"]
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(200):
                profiled()
            prof.disable()
            torch.cuda.synchronize()
            print(f"\n-- cProfile, M = {M}, 200 calls of {a.profile}", flush=True)
            pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
