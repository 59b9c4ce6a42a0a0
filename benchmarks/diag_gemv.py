"""Diagnose kernel speed on the GPU: per-config GEMV timings with the compiled
kernel's registers, spills and SASS instruction mix, and FWHT variants.

    python benchmarks/diag_gemv.py --shape 14336x4096 --bits 5
    python benchmarks/diag_gemv.py --sweep --json out.json   # VEC x R x rows per program, M = 1

``--sweep`` times what ``F.linear`` runs at M = 1 (raw bfloat16 activations,
rotated in the kernel) over a grid of configs on the benchmark shapes; with
``--baseline MODULE`` it also times another copy of the GEMV (e.g. the previous
commit's, copied into a package) on the same weights, in the same run.
"""

from __future__ import annotations

import argparse
import collections
import re

import torch
import triton

import importlib
import json
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


def _sweep_configs(N: int, K: int, bits: int, sm: int) -> list[dict]:
    """VEC x R x rows per program sized for 4..10 programs per SM (VEC = 16: the 4 warps side by side along K)."""
    out = []
    for VEC, Rs in ((4, (8, 16)), (16, (1, 2, 4))):
        slices = -(-K // tuning.slice_codes(bits, VEC))
        for R in Rs:
            rows_seen = set()
            for per_sm in (3, 4, 5, 7, 10):
                rows = tuning._rows_per_program(N, slices, 1, R, sm, per_sm)
                if rows not in rows_seen:
                    rows_seen.add(rows)
                    out.append(dict(VEC=VEC, R=R, ROWS=rows, num_warps=4))
    return out


def sweep(shapes: list[str], bits_list: list[int], baseline: str | None, json_path: str | None) -> None:
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    base = importlib.import_module(baseline) if baseline else None
    records = []
    for shape in shapes:
        N, K = (int(v) for v in shape.split("x"))
        w = torch.randn(N, K, device="cuda") * 0.02
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        for bits in bits_list:
            qdata, scale = quantize_ref(w, bits, 128)
            nbytes = qdata.numel() + 2 * scale.numel()
            copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, 50 << 20) - 1)]
            runs = [("new", gemv_mod, c) for c in _sweep_configs(N, K, bits, sm)]
            if base is not None:  # the previous kernel: power-of-two rows, no PREFETCH
                for c in tuning.candidates("gemv", 1, N, K, sm, bits)[:2]:
                    runs.append(("base", base, c))
            best = {}
            for name, mod, c in runs:
                calls = [lambda q=q, s=s, mod=mod, c=c: mod.gemv(x, q, s, None, bits, 128, None, torch.bfloat16, c,
                                                                 rotate=True) for q, s in copies]
                t, spread = graph_time(calls, replays=10)
                kern = _latest_kernel(mod._gemv_kernel)
                regs = kern.n_regs if kern is not None else ""
                programs = -(-N // c["ROWS"]) * -(-K // tuning.slice_codes(bits, c["VEC"]))
                print(f"{shape} q{bits} {name:4s} {t:7.2f} us {nbytes / t / 1e3:5.0f} GB/s  programs/SM "
                      f"{programs / sm:5.2f}  {c}  regs={regs}", flush=True)
                records.append(dict(shape=shape, bits=bits, kernel=name, us=t, spread=spread, config=c,
                                    programs=programs))
                if name not in best or t < best[name][0]:
                    best[name] = (t, c)
            print(f"== {shape} q{bits} best: " + "; ".join(f"{k} {v[0]:.2f} us {v[1]}" for k, v in best.items()),
                  flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(0), records=records), f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--shapes", nargs="*", default=["14336x4096", "4096x14336", "4096x4096", "1024x4096"])
    p.add_argument("--bits-list", nargs="*", type=int, default=[5, 4])
    p.add_argument("--baseline", default=None, help="module with another gemv() to time alongside (--sweep)")
    p.add_argument("--json", default=None)
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--fwht", action="store_true")
    p.add_argument("--grid", action="store_true", help="time a fixed grid of configs instead of the candidates")
    p.add_argument("--more", nargs="*", default=[], help="extra N x K shapes to time with the default config")
    a = p.parse_args()
    if a.sweep:
        sweep(a.shapes, a.bits_list, a.baseline, a.json)
        return
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
