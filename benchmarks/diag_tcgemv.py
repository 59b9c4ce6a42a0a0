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

``--maxnreg 64 80`` adds each tile with that register cap per thread and the
programs per SM it allows. ``--resident`` also times the path and every tile
on one weight copy called over and over (read from the L2, not from memory):
what the kernel costs when the weight's bytes arrive at L2 latency.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from bench_ops import case_record, graph_time, rel_error, sweep, sweep_parser

from hlwq_ops import kernels
from hlwq_ops.kernels.fwht import fwht
from hlwq_ops.kernels.tcgemv import tc_gemv

BLOCK = 128  # the block size tc_gemv serves


def tiles(M: int, N: int, k_pad: int, sm: int, caps: list[int]) -> list[dict]:
    """(num_warps, KB, programs per SM) combinations, ROWS sized to match; with each register cap in ``caps``,
    the 4-warp KB = 2 tile at the programs per SM the cap allows (64 K registers per SM)."""
    shapes = [(4, 2, 4, None), (8, 2, 2, None), (4, 2, 8, None), (4, 2, 5, None)]
    shapes += [(4, 2, 65536 // (128 * cap), cap) for cap in caps]
    out = []
    mg = 2 if M > 8 else 1
    for nw, kb, per_sm, cap in shapes:
        k_programs = -(-k_pad // (BLOCK * nw * kb))
        m_programs = -(-M // (8 * mg))
        row_programs = max(1, per_sm * sm // (k_programs * m_programs))
        rows = max(16, -(-N // (row_programs * 16)) * 16)
        for warp_sum in (False, True):
            tile = {"num_warps": nw, "KB": kb, "MG": mg, "ROWS": rows, "WARP_SUM": warp_sum, "per_sm": per_sm}
            out.append(tile | ({"maxnreg": cap} if cap else {}))
    return out


def main() -> None:
    p = sweep_parser(__doc__, [1, 2, 4, 8, 16], "diag_tcgemv.json")
    p.add_argument("--maxnreg", nargs="*", type=int, default=[], help="register caps to add tiles for")
    p.add_argument("--resident", action="store_true", help="also time on one L2-resident weight copy")
    a = p.parse_args()
    rows = []
    for case in sweep(a):
        N, K, bits, M, sm = case["N"], case["K"], case["bits"], case["M"], case["sm"]
        copies, x, ref, bf16_us, path_us = (case[k] for k in ("copies", "x", "ref", "bf16_us", "path_us"))
        k_pad = copies[0][1].shape[1] * BLOCK
        xr = fwht(F.pad(x, (0, k_pad - K)), BLOCK, torch.bfloat16)
        results = []
        if a.resident:
            def path_call(q=copies[0][0], s=copies[0][1], x=x, bits=bits, K=K):
                return kernels.linear(x, q, s, None, bits, 128, K, None)

            path_l2 = graph_time([path_call] * len(copies), replays=10)[0]
            case["path_l2_us"] = path_l2
            print(f"{'':>10} path on one L2-resident copy: {path_l2:7.2f} us", flush=True)
        for tile in tiles(M, N, k_pad, sm, a.maxnreg):
            config = {k: v for k, v in tile.items() if k != "per_sm"}
            err = rel_error(tc_gemv(xr, *copies[0], None, bits, 128, None, torch.bfloat16, config), ref)

            def alone(q, s, xr=xr, bits=bits, config=config):
                return tc_gemv(xr, q, s, None, bits, 128, None, torch.bfloat16, config)

            def rotating(q, s, x=x, pad=k_pad - K, bits=bits, config=config):
                return alone(q, s, fwht(F.pad(x, (0, pad)), BLOCK, torch.bfloat16), bits, config)

            us = graph_time([lambda q=q, s=s: alone(q, s) for q, s in copies], replays=10)[0]
            full = graph_time([lambda q=q, s=s: rotating(q, s) for q, s in copies], replays=10)[0]
            results.append(dict(tile, us=us, with_fwht_us=full, err=err))
            resident = ""
            if a.resident:
                results[-1]["l2_us"] = graph_time([lambda c=copies[0]: alone(*c)] * len(copies), replays=10)[0]
                resident = f", L2-resident {results[-1]['l2_us']:7.2f} us"
            print(f"{'':>10} tc {tile}: {us:7.2f} us, +FWHT {full:7.2f} us (x{bf16_us / full:.2f} bf16, "
                  f"x{path_us / full:.2f} path){resident}, err {err:.1e}", flush=True)
        best = min(results, key=lambda r: r["with_fwht_us"])
        print(f"{'':>10} best: {best}", flush=True)
        rows.append(case_record(case, tc=results))
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
