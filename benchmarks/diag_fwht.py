"""The FWHT kernel alone at large M, in the orders the kernels read, against a copy of the same bytes.

Each timing is one CUDA graph over activation copies past the L2 (``bench_ops.graph_time``): ``span`` is the
register-operand ws kernel's order (``fwht(x, 128, bf16, per_word=8, span=128)``), ``plain`` K order (dequantize +
cuBLAS), ``copy`` a device copy of the activations (read + write, the floor)::

    python benchmarks/diag_fwht.py --m 128 256 512 2048 --k 4096 14336 --json diag_fwht.json
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_ops import graph_time

from hlwq_ops.kernels.fwht import fwht


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", nargs="+", type=int, default=[128, 256, 512, 2048])
    p.add_argument("--k", nargs="+", type=int, default=[4096, 14336])
    p.add_argument("--json", default="diag_fwht.json")
    a = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, torch {torch.__version__}", flush=True)
    rows = []
    for K in a.k:
        for M in a.m:
            nbytes = M * K * 2
            xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                  for _ in range(max(4, min(64, -(-4 * props.L2_cache_size // nbytes))))]
            outs = [torch.empty_like(x) for x in xs]
            row = {"M": M, "K": K, "copies": len(xs)}
            row["copy"] = graph_time([lambda x=x, o=o: o.copy_(x) for x, o in zip(xs, outs)], replays=10)[0]
            row["span"] = graph_time([lambda x=x: fwht(x, 128, torch.bfloat16, 8, 128) for x in xs], replays=10)[0]
            row["plain"] = graph_time([lambda x=x: fwht(x, 128, torch.bfloat16, 0) for x in xs], replays=10)[0]
            print(f"M {M:>5} K {K:>6}: " + ", ".join(f"{name} {row[name]:6.2f} us ({2 * nbytes / row[name] / 1e3:4.0f} "
                                                     f"GB/s)" for name in ("copy", "span", "plain")), flush=True)
            rows.append(row)
            del xs, outs
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
