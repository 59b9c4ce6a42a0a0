"""The fused large-M kernel (:mod:`hlwq_ops.kernels.gemm`) against bf16 cuBLAS and the paths in use.

    python benchmarks/diag_gemm.py --shapes 14336x4096 4096x14336 --bits 5 4 --m 16 32 64 128 512 2048

For each shape, bits and M: bf16 ``F.linear``, ``hlwq.linear``'s default path
(tuned as in use), dequantize + cuBLAS (forced), and :func:`gemm` for each
tile in ``CONFIGS`` with the split of K that fills the SMs, its FWHT (natural
order, bf16) timed apart and added. Every output is checked against a float64
reference. Timing: CUDA graph over weight copies past L2 (``bench_ops.graph_time``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from bench_ops import forced_path, graph_time, n_copies, rel_error  # noqa: E402

from hlwq_ops import kernels  # noqa: E402
from hlwq_ops.kernels.fwht import fwht  # noqa: E402
from hlwq_ops.kernels.gemm import gemm  # noqa: E402

# (BM, BN, BK, num_warps, num_stages); shared memory and registers from the offline compile (Triton 3.6, Q5)
CONFIGS = [
    (128, 128, 128, 8, 2),  # 104 KiB, 182 registers
    (128, 128, 128, 8, 3),  # 144 KiB, 184
    (128, 64, 128, 4, 2),  # 84 KiB, 168
    (64, 128, 128, 4, 3),  # 96 KiB, 168
    (64, 64, 128, 4, 3),  # 72 KiB, 128
    (128, 128, 64, 8, 3),  # 72 KiB, 128
    (256, 128, 64, 8, 3),  # 120 KiB, 240
]


def split_for(M, N, K, BM, BN, BK, sm):
    tiles = -(-N // BN) * -(-M // BM)
    steps = K // BK
    split = 1
    while tiles * split < sm and steps // (split * 2) >= 8:
        split *= 2
    return split


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336"])
    parser.add_argument("--m", type=int, nargs="+", default=[16, 32, 64, 128, 512, 2048])
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 4])
    parser.add_argument("--json", default="diag_gemm.json")
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    sm, l2 = props.multi_processor_count, props.L2_cache_size
    print(f"{props.name}, {sm} SMs, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows = []
    start = time.perf_counter()

    def timed(label, calls, ref, extra_us=0.0, **info):
        out = calls[0]()
        t, spread = graph_time(calls, replays=10)
        err = rel_error(out, ref)
        rows.append(dict(method=label, us=t + extra_us, spread_us=spread, rel_err=err, **info))
        print(f"    {label:<52} {t + extra_us:8.2f} us  +-{spread:4.2f}  err {err:.1e}", flush=True)
        return t + extra_us

    for shape in args.shapes:
        N, K = (int(v) for v in shape.split("x"))
        for bits in args.bits:
            gen = torch.Generator(device="cuda").manual_seed(N + K + bits)
            w = torch.randn(N, K, device="cuda", generator=gen) * 0.02
            qdata, scale = torch.ops.hlwq.quantize(w, bits, 128)
            w_hat = torch.ops.hlwq.dequantize(qdata, scale, bits, 128, K, torch.float64)
            wb = w_hat.bfloat16()
            copies = [(qdata, scale)] + [(qdata.clone(), scale.clone())
                                         for _ in range(n_copies(qdata.nbytes + scale.nbytes, l2) - 1)]
            bf16s = [wb] + [wb.clone() for _ in range(n_copies(wb.nbytes, l2) - 1)]
            for M in args.m:
                info = dict(N=N, K=K, M=M, bits=bits)
                print(f"  {N}x{K} Q{bits} M={M}", flush=True)
                x = torch.randn(M, K, device="cuda", generator=gen).bfloat16()
                ref = x.double() @ w_hat.t()
                t_bf16 = timed("bf16 F.linear", [lambda w=w_: F.linear(x, w) for w_ in bf16s], ref, **info)
                timed("[default path]", [lambda q=q, s=s: kernels.linear(x, q, s, None, bits, 128, K, None)
                                         for q, s in copies], ref, **info)
                with forced_path("dequant"):
                    timed("[dequant]", [lambda q=q, s=s: kernels.linear(x, q, s, None, bits, 128, K, None)
                                        for q, s in copies], ref, **info)
                xr = fwht(x, 128, torch.bfloat16)
                t_fwht, _ = graph_time([lambda: fwht(x, 128, torch.bfloat16)] * 8, replays=10)
                best = None
                for BM, BN, BK, warps, stages in CONFIGS:
                    if BM > max(16, 2 * M) or (M >= 512 and BM < 64):
                        continue
                    for split in sorted({split_for(M, N, K, BM, BN, BK, sm), 1}):
                        cfg = dict(BM=BM, BN=BN, BK=BK, SPLIT_K=split, num_warps=warps, num_stages=stages)
                        calls = [lambda q=q, s=s, c=cfg: gemm(xr, q, s, None, bits, 128, None, torch.bfloat16, c)
                                 for q, s in copies]
                        try:
                            t = timed(f"[gemm] BM={BM} BN={BN} BK={BK} w={warps} st={stages} split={split}", calls,
                                      ref, extra_us=t_fwht, config=cfg, **info)
                        except Exception as e:  # noqa: BLE001 -- e.g. out of shared memory on this GPU
                            print(f"    {cfg}: {type(e).__name__}: {str(e)[:100]}", flush=True)
                            continue
                        best = t if best is None else min(best, t)
                print(f"    best gemm {best:.2f} us (FWHT {t_fwht:.2f}) = {t_bf16 / best:.2f}x bf16", flush=True)
            del copies, bf16s
            with open(args.json, "w") as f:
                json.dump(dict(device=props.name, date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=1)
        print(f"  after {shape}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
