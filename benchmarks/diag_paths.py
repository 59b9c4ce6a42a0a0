"""Per-path and per-config timings on the GPU, to set the crossovers and the tensor-core tiles.

    python benchmarks/diag_paths.py --json out.json                    # from the repository root
    python benchmarks/diag_paths.py --baseline-dir .diag               # also time older kernel copies

For each shape and M: bf16 ``F.linear``, the GEMV (M <= 4) and dequantize +
cuBLAS (``HLWQ_PATH`` forced, tuned as in use), and the register-operand
tensor-core kernel (:mod:`hlwq_ops.kernels.wgmma`) for every tile ``BM`` and
split of K worth trying, its FWHT included. Every timed output is checked
against a float64 reference. With ``--baseline-dir`` (a folder holding
``gemv_old.py`` / ``wgmma_old.py``, copies of earlier kernel files) the old
kernels are timed on the same weights, and ``benchmarks/wgmma_prototype.py``
beside them. Timing: CUDA graph over weight copies past L2 (``bench_ops.graph_time``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from bench_ops import forced_path, graph_time, packed_copies, quantized_for_timing, rel_error  # noqa: E402

from hlwq_ops import kernels  # noqa: E402
from hlwq_ops.kernels import tuning  # noqa: E402
from hlwq_ops.kernels.fwht import fwht  # noqa: E402

wgmma_mod = importlib.import_module("hlwq_ops.kernels.wgmma")
gemv_mod = importlib.import_module("hlwq_ops.kernels.gemv")


def load_copy(path: str, name: str):
    """An older copy of a kernel module, importable beside the current one (relative imports resolve)."""
    spec = importlib.util.spec_from_file_location(f"hlwq_ops.kernels.{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def wgmma_configs(M: int, N: int, k_pad: int, sm: int) -> list[dict]:
    """The tuner's candidates for every tile BM in 16..128 (at most the M bucket, at least 1/8 of it); up to
    BM = 32 the same with a register cap (``maxnreg``), from BM = 32 on with two warpgroups (BN = 128, 8 warps:
    one activation tile in shared memory for both)."""
    bucket = tuning.m_bucket(M)
    out = []
    for BM in (16, 32, 64, 128):
        if min(128, bucket // 8) <= BM <= max(16, bucket):
            tuned = tuning._wgmma_candidates(M, N, k_pad, sm, BM)
            out += tuned
            three = [c for c in tuned if c["num_stages"] == 3]
            if BM <= 32:  # register caps: more programs per SM if the loop fits (80 spills, session 6)
                out += [dict(c, maxnreg=r) for c in three for r in (96, 80)]
            if BM >= 32:
                out += [dict(c, BN=128, num_warps=8) for c in three]
    return [c for i, c in enumerate(out) if c not in out[:i]]


def time_rows(label, calls, ref, out, rows, extra_us=0.0, **info):
    t, spread = graph_time(calls, replays=10)
    err = rel_error(out, ref) if ref is not None else float("nan")
    rows.append(dict(method=label, us=t + extra_us, spread_us=spread, rel_err=err, **info))
    print(f"    {label:<58} {t + extra_us:8.2f} us  +-{spread:4.2f}  err {err:.1e}", flush=True)


def sweep_shape(N, K, ms, bits, sm, l2, rows, baseline):
    gen = torch.Generator(device="cuda").manual_seed(N + K)
    w = torch.randn(N, K, device="cuda", generator=gen) * 0.02
    copies, w_hat, bf16s = quantized_for_timing(w, bits, l2)
    wb = bf16s[0]
    for M in ms:
        print(f"  {N}x{K} Q{bits} M={M}", flush=True)
        info = dict(N=N, K=K, M=M, bits=bits)
        x = torch.randn(M, K, device="cuda", generator=gen).bfloat16()
        ref = x.double() @ w_hat.t()
        bound = 2 * rel_error(x @ wb.t(), ref)
        time_rows("bf16 F.linear", [lambda w=w_: F.linear(x, w) for w_ in bf16s], ref, F.linear(x, wb), rows, **info)
        for path in ("gemv", "dequant") if M <= 4 else ("dequant",):
            with forced_path(path):
                calls = [lambda q=q, s=s: kernels.linear(x, q, s, None, bits, 128, K, None) for q, s in copies]
                time_rows(f"[{path}]", calls, ref, calls[0](), rows, **info)
        xp = fwht(x, 128, torch.bfloat16, per_word=8)
        t_fwht, _ = graph_time([lambda: fwht(x, 128, torch.bfloat16, per_word=8)] * 8, replays=10)
        print(f"    FWHT (permuted, bf16): {t_fwht:.2f} us", flush=True)
        old = [("wgmma_old", baseline["wgmma_old"])] if "wgmma_old" in baseline and M <= 16 else []
        mods = [("wgmma", wgmma_mod)] + old
        for name, mod in mods:
            for cfg in wgmma_configs(M, N, K, sm):
                if name == "wgmma_old" and (cfg["BM"] != 16 or "maxnreg" in cfg or "one_dot" in cfg):
                    continue  # options older copies do not read
                calls = [lambda q=q, s=s, c=cfg: mod.wgmma(xp, q, s, None, bits, 128, torch.bfloat16, c)
                         for q, s in copies]
                out = calls[0]()
                label = (f"[{name}] BM={cfg['BM']} BN={cfg['BN']} split={cfg['SPLIT_K']} stages={cfg['num_stages']}"
                         f" regs={cfg.get('maxnreg')} one_dot={cfg.get('one_dot', True)}")
                time_rows(label, calls, ref, out, rows, extra_us=t_fwht, fwht_us=t_fwht, config=cfg, **info)
                if rows[-1]["rel_err"] > bound:
                    print(f"    !!! error {rows[-1]['rel_err']:.2e} above the bf16 bound {bound:.2e}", flush=True)
        if "prototype" in baseline and bits == 5 and M <= 16:
            proto = baseline["prototype"]
            out = torch.zeros(M, N, device="cuda")
            for split in (4, 8):
                def run(q, s, split=split):
                    proto.k[(-(-N // 64), split)](xp, q.view(torch.int32), s, out, M, N, K, q.shape[1] // 4, s.shape[1],
                                                 BM=16, BN=64, B=128, CB_ASM=proto.cb_asm(), SPLIT=split, num_warps=4,
                                                 num_stages=3)
                time_rows(f"[prototype] BM=16 split={split} stages=3 (no FWHT)",
                          [lambda q=q, s=s: run(q, s) for q, s in copies], None, None, rows, **info)
    del copies, bf16s


def gemv_versions(shapes, bits, sm, l2, rows, baseline):
    """M = 1 GEMV (raw bf16 activations, rotated in the kernel): every tuning candidate, current and old copy."""
    for N, K in shapes:
        qdata, scale = torch.ops.hlwq.quantize(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
        copies = packed_copies(qdata, scale, l2)
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        ref = x.double() @ torch.ops.hlwq.dequantize(qdata, scale, bits, 128, K, torch.float64).t()
        print(f"  GEMV {N}x{K} Q{bits} M=1", flush=True)
        for name, mod in [("gemv", gemv_mod)] + ([("gemv_old", baseline["gemv_old"])] if "gemv_old" in baseline else []):
            for cfg in tuning.candidates("gemv", 1, N, K, sm, bits):
                calls = [lambda q=q, s=s, c=cfg: mod.gemv(x, q, s, None, bits, 128, None, torch.bfloat16, c, rotate=True)
                         for q, s in copies]
                label = f"[{name}] VEC={cfg['VEC']} R={cfg['R']} ROWS={cfg['ROWS']}"
                time_rows(label, calls, ref, calls[0](), rows, N=N, K=K, M=1, bits=bits, config=cfg)
        del copies


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336", "4096x4096"])
    parser.add_argument("--m", type=int, nargs="+", default=[2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--bits", type=int, nargs="+", default=[5])
    parser.add_argument("--gemv-shapes", nargs="*", default=["14336x4096", "4096x14336", "4096x4096", "1024x4096"])
    parser.add_argument("--baseline-dir", default=None)
    parser.add_argument("--json", default="diag_paths.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    sm, l2 = props.multi_processor_count, props.L2_cache_size
    print(f"{props.name}, {sm} SMs, L2 {l2 >> 20} MiB, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}",
          flush=True)
    baseline = {}
    if args.baseline_dir:
        for name in ("gemv_old", "wgmma_old"):
            path = os.path.join(args.baseline_dir, f"{name}.py")
            if os.path.exists(path):
                baseline[name] = load_copy(path, name)
        baseline["prototype"] = importlib.import_module("wgmma_prototype")
    rows = []
    start = time.perf_counter()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.gemv_shapes]
    for bits in args.bits:
        gemv_versions(shapes, bits, sm, l2, rows, baseline)
    print(f"  GEMV part: {time.perf_counter() - start:.0f} s", flush=True)
    for shape in args.shapes:
        N, K = (int(v) for v in shape.split("x"))
        for bits in args.bits:
            sweep_shape(N, K, [m for m in args.m if not (N * K <= 4096 * 4096 and m > 512)], bits, sm, l2, rows, baseline)
        print(f"  after {shape}: {time.perf_counter() - start:.0f} s", flush=True)
        with open(args.json, "w") as f:
            json.dump(dict(device=props.name, date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
