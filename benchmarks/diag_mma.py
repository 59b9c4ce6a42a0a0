"""Time tensor-core kernel configs on the GPU (CUDA graph over weight copies past L2).

    python benchmarks/diag_mma.py --shape 14336x4096 --bits 5 --m 8 16
"""

from __future__ import annotations

import argparse
import itertools

import torch

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels.mma import mma

from bench_ops import graph_time, n_copies  # noqa: E402  (run from benchmarks/)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="14336x4096")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--m", type=int, nargs="+", default=[8, 16])
    p.add_argument("--splits", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    N, K = (int(v) for v in a.shape.split("x"))
    qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, a.bits, 128)
    nbytes = qdata.numel() + 2 * scale.numel()
    copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, 50 << 20) - 1)]
    for M in a.m:
        xr = torch.randn(M, K, device="cuda")
        for vec, bn, nw, split in itertools.product((1, 2), (64, 128), (4,), a.splits):
            c = dict(BM=16, BN=bn, VEC=vec, SPLIT_K=split, num_warps=nw, num_stages=1)
            calls = [lambda q=q, s=s: mma(xr, q, s, None, a.bits, 128, None, torch.bfloat16, c) for q, s in copies]
            try:
                t, _ = graph_time(calls, replays=10)
            except Exception as e:  # noqa: BLE001  (out of resources: skip the config)
                print(f"M={M} {c}: {type(e).__name__}", flush=True)
                continue
            print(f"M={M} {t:8.2f} us  {nbytes / t / 1e3:6.0f} GB/s  {c}", flush=True)


if __name__ == "__main__":
    main()
