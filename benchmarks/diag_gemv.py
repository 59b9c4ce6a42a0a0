"""Diagnose kernel speed on the GPU: per-config GEMV timings with the compiled
kernel's registers, spills and SASS instruction mix, and FWHT variants.

    python benchmarks/diag_gemv.py --shape 14336x4096 --bits 5
"""

from __future__ import annotations

import argparse
import collections
import re

import torch
import triton

import importlib
import shutil
import subprocess
import tempfile

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels import tuning

gemv_mod = importlib.import_module("hlwq_ops.kernels.gemv")

from bench_ops import graph_time, n_copies  # noqa: E402  (run from benchmarks/)


def sass_mix(kernel) -> str:
    tool = shutil.which("nvdisasm") or triton.__path__[0] + "/backends/nvidia/bin/nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        sass = subprocess.run([tool, "-c", f.name], capture_output=True, text=True).stdout
    ops = collections.Counter(m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]+)", sass, re.M))
    keys = ["LDG", "LDS", "STS", "SHFL", "BAR", "LDL", "STL", "LEA", "LOP3", "IMAD", "FFMA"]
    return " ".join(f"{k}={ops.get(k, 0)}" for k in keys) + f" total={sum(ops.values())}"


_SEEN: set[int] = set()


def _latest_kernel(jit_fn):
    """The compiled kernel added to ``jit_fn``'s caches since the last call."""
    found = None
    for cache in getattr(jit_fn, "device_caches", {}).values():
        for kern in cache[0].values():
            if id(kern) not in _SEEN:
                _SEEN.add(id(kern))
                found = kern
    return found


def fwht_times() -> None:
    from hlwq_ops import kernels

    for M, K in [(1, 4096), (1, 14336), (16, 4096), (2048, 4096)]:
        xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(16)]
        t, _ = graph_time([lambda x=x: kernels.fwht(x, 128, torch.float32) for x in xs], replays=10)
        print(f"FWHT M={M} K={K}: {t:.2f} us", flush=True)
    kern = _latest_kernel(kernels.fwht.__globals__["_fwht_kernel"])
    if kern is not None:
        print(f"  fwht kernel regs={kern.n_regs} spills={kern.n_spills} | {sass_mix(kern)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--fwht", action="store_true")
    p.add_argument("--grid", action="store_true", help="time a fixed grid of configs instead of the candidates")
    p.add_argument("--more", nargs="*", default=[], help="extra N x K shapes to time with the default config")
    a = p.parse_args()
    if a.fwht:
        fwht_times()
    N, K = (int(v) for v in a.shape.split("x"))
    w = torch.randn(N, K, device="cuda") * 0.02
    qdata, scale = quantize_ref(w, a.bits, 128)
    nbytes = qdata.numel() + 2 * scale.numel()
    copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, 50 << 20) - 1)]
    xr = torch.randn(a.m, K, device="cuda")
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    cands = tuning.candidates("gemv", a.m, N, K, sm, a.bits)
    if a.grid:
        cands = [
            dict(VEC=vec, R=r, ROWS=rows, num_warps=w)
            for vec, r, w in ((4, 8, 4), (4, 16, 4), (4, 4, 2), (2, 8, 4))
            for rows in (32, 64, 128)
            if rows % r == 0
        ]
    for c in cands:
        calls = [lambda q=q, s=s: gemv_mod.gemv(xr, q, s, None, a.bits, 128, None, torch.bfloat16, c) for q, s in copies]
        t, spread = graph_time(calls, replays=10)
        info = ""
        kern = _latest_kernel(gemv_mod._gemv_kernel)
        if kern is not None:
            info = f"regs={kern.n_regs} spills={kern.n_spills} | {sass_mix(kern)}"
        print(f"{t:8.2f} us  {nbytes / t / 1e3:6.0f} GB/s  {c}  {info}", flush=True)


if __name__ == "__main__":
    main()
