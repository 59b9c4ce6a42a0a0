"""The tensor-core GEMV (:mod:`hlwq_ops.kernels.tcgemv`) against the paths in use, at M = 1..16.

For each shape, bits and M: bf16 ``F.linear``, ``hlwq.linear`` on its default
path, and the tensor-core GEMV on a grid of tiles (``num_warps``, ``KB``
blocks of K per warp, programs per SM, ``WARP_SUM``; ``MG = 2`` above
M = 8), alone on
rotated bfloat16 activations and with the FWHT kernel in front (what
``F.linear`` would run). Each result is checked against a float64 reference.
Timed like ``bench_ops.py`` (one CUDA graph over weight copies spanning the L2
several times)::

    python benchmarks/diag_tcgemv.py --shapes 14336x4096 4096x4096 --bits 5 4 --m 1 8 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from bench_ops import graph_time, linear_cases, rel_error

from hlwq_ops.kernels.fwht import fwht
from hlwq_ops.kernels.tcgemv import tc_gemv

BLOCK = 128  # the block size tc_gemv serves


def tiles(M: int, N: int, k_pad: int, sm: int) -> list[dict]:
    """(num_warps, KB, programs per SM) combinations, ROWS sized to match."""
    out = []
    mg = 2 if M > 8 else 1
    for nw, kb, per_sm in ((4, 2, 4), (8, 2, 2), (4, 2, 8), (4, 2, 5)):
        k_programs = -(-k_pad // (BLOCK * nw * kb))
        m_programs = -(-M // (8 * mg))
        row_programs = max(1, per_sm * sm // (k_programs * m_programs))
        rows = max(16, -(-N // (row_programs * 16)) * 16)
        for warp_sum in (False, True):
            out.append(dict(num_warps=nw, KB=kb, MG=mg, ROWS=rows, WARP_SUM=warp_sum, per_sm=per_sm))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336", "4096x4096", "1024x4096"])
    p.add_argument("--bits", nargs="+", type=int, default=[5, 4])
    p.add_argument("--m", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--json", default="diag_tcgemv.json")
    a = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    l2, sm = props.L2_cache_size, props.multi_processor_count
    print(f"{props.name}, torch {torch.__version__}", flush=True)
    rows = []
    for case in linear_cases(a.shapes, a.bits, a.m, l2):
        N, K, bits, M = case["N"], case["K"], case["bits"], case["M"]
        copies, x, ref, bf16_us, path_us = (case[k] for k in ("copies", "x", "ref", "bf16_us", "path_us"))
        k_pad = copies[0][1].shape[1] * BLOCK
        xr = fwht(F.pad(x, (0, k_pad - K)), BLOCK, torch.bfloat16)
        results = []
        for tile in tiles(M, N, k_pad, sm):
            config = {k: v for k, v in tile.items() if k != "per_sm"}
            err = rel_error(tc_gemv(xr, *copies[0], None, bits, 128, None, torch.bfloat16, config), ref)

            def alone(q, s, xr=xr, bits=bits, config=config):
                return tc_gemv(xr, q, s, None, bits, 128, None, torch.bfloat16, config)

            def rotating(q, s, x=x, pad=k_pad - K, bits=bits, config=config):
                return alone(q, s, fwht(F.pad(x, (0, pad)), BLOCK, torch.bfloat16), bits, config)

            us = graph_time([lambda q=q, s=s: alone(q, s) for q, s in copies], replays=10)[0]
            full = graph_time([lambda q=q, s=s: rotating(q, s) for q, s in copies], replays=10)[0]
            results.append(dict(tile, us=us, with_fwht_us=full, err=err))
            print(f"{'':>10} tc {tile}: {us:7.2f} us, +FWHT {full:7.2f} us (x{bf16_us / full:.2f} bf16, "
                  f"x{path_us / full:.2f} path), err {err:.1e}", flush=True)
        best = min(results, key=lambda r: r["with_fwht_us"])
        print(f"{'':>10} best: {best}", flush=True)
        rows.append({k: v for k, v in case.items() if k not in ("copies", "x", "ref")} | {"tc": results})
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
