"""The dequantize + cuBLAS path by chunk size, on the GPU: how much of the 16-bit weight to decode at a time.

    python benchmarks/diag_dequant.py --json out.json            # from the repository root

For each shape and M: bf16 ``F.linear``, the tensor-core path (``HLWQ_PATH=mma``,
where it applies) and :func:`hlwq_ops.kernels.dequant_linear` with the weight
decoded whole or ``--chunks`` MB of rows at a time (the activations rotated by
the FWHT kernel first, as ``hlwq.linear`` does), and the dequantize kernel
alone. Every output is checked against a float64 reference. Timing: CUDA graph
over weight copies past L2 (``bench_ops.graph_time``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from bench_ops import forced_path, graph_time, n_copies, rel_error  # noqa: E402

import hlwq_ops  # noqa: E402
from hlwq_ops import kernels  # noqa: E402
from hlwq_ops.utils import tensor_nbytes  # noqa: E402


def dequant_path(x, q, chunk_bytes):
    """hlwq.linear's dequantize path with a given chunk size (x: raw (M, K) activations)."""
    xr = kernels.fwht(x, q.block_size, x.dtype)
    return kernels.dequant_linear(xr, q.qdata, q.scale, None, q.bits, q.block_size, None, chunk_bytes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336", "4096x4096"])
    p.add_argument("--m", nargs="+", type=int, default=[128, 256, 512, 2048])
    p.add_argument("--chunks", nargs="+", type=int, default=[8, 16, 32, 48], help="MB of 16-bit rows per chunk")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--json", default="diag_dequant.json")
    a = p.parse_args()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows = []
    for shape in a.shapes:
        N, K = map(int, shape.split("x"))
        torch.manual_seed(0)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
        q = hlwq_ops.HLWQTensor.from_hp(w, a.bits)
        qs = [q] + [q.clone() for _ in range(n_copies(tensor_nbytes(q), l2) - 1)]
        for M in a.m:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            ref = (x.double() @ q.dequantize(torch.float64).t()).float()

            def add(label, fn, ref=ref):
                err = rel_error(fn(qs[0]), ref)
                us, spread = graph_time([lambda q_=q_: fn(q_) for q_ in qs])
                row = dict(shape=shape, M=M, bits=a.bits, label=label, us=us, spread_us=spread, rel_err=err)
                print(f"{shape:>11} M={M:<5} {label:<22} {us:9.1f} us  (+-{spread:.1f})  err {err:.2e}", flush=True)
                rows.append(row)

            ws = [w.clone() for _ in range(n_copies(N * K * 2, l2))]
            err = rel_error(F.linear(x, w), ref)
            us, spread = graph_time([lambda w_=w_: F.linear(x, w_) for w_ in ws])
            print(f"{shape:>11} M={M:<5} {'bf16':<22} {us:9.1f} us  (+-{spread:.1f})  err {err:.2e}", flush=True)
            rows.append(dict(shape=shape, M=M, bits=a.bits, label="bf16", us=us, spread_us=spread, rel_err=err))
            del ws
            if M <= 256:
                with forced_path("mma"):
                    add("tensor-core", lambda q_: F.linear(x, q_))
            add("dequant whole", lambda q_: dequant_path(x, q_, 1 << 62))
            for mb in a.chunks:
                add(f"dequant {mb} MB", lambda q_, mb=mb: dequant_path(x, q_, mb << 20))
        us, spread = graph_time([lambda q_=q_: kernels.dequantize_rotated(q_.qdata, q_.scale, q.bits, q.block_size,
                                                                           None, torch.bfloat16) for q_ in qs])
        print(f"{shape:>11} {'dequantize kernel':<30} {us:9.1f} us", flush=True)
        rows.append(dict(shape=shape, M=0, bits=a.bits, label="dequantize kernel", us=us, spread_us=spread))
        del qs, q, w
        torch.cuda.empty_cache()
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
