"""The GEMV decoding once for two activation rows (``MB = 2``) against one row per program, at M = 2..4.

With ``MB = 1`` a program owns one activation row, so M rows decode the
weight M times; with ``MB = 2`` it keeps two rows' activation slices in
registers and feeds each decoded centroid to both (offline, Q5 VEC = 4 R = 8:
424 loop instructions for two rows against 319 for one, 127 registers
against 72). For each shape, bits and M: bf16 ``F.linear``, every GEMV
candidate of the tuner (both MB), each checked against a float64 reference,
and ``hlwq.linear`` on its default path (the tensor-core kernel from M = 3
for bf16 activations). Timed like ``bench_ops.py`` (one CUDA graph over
weight copies spanning the L2 several times):

    python benchmarks/diag_rows.py --shapes 14336x4096 4096x14336 4096x4096 --bits 5 4 --m 2 3 4 --json out.json
"""

from __future__ import annotations

import json

import torch
from bench_ops import graph_time, rel_error, sweep, sweep_parser

from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.gemv import can_rotate, gemv


def main() -> None:
    p = sweep_parser(__doc__, [2, 3, 4], "diag_rows.json")
    a = p.parse_args()
    rows = []
    for case in sweep(a):
        shape, N, bits, M, sm = case["shape"], case["N"], case["bits"], case["M"], case["sm"]
        copies, x, ref, bf16_us, path, path_us = (case[k] for k in ("copies", "x", "ref", "bf16_us", "path", "path_us"))
        row = {"shape": shape, "bits": bits, "M": M, "bf16_us": bf16_us, "path": path, "path_us": path_us}
        best = {}
        for config in tuning.candidates("gemv", M, N, copies[0][0].shape[1] * 8 // bits, sm, bits):
            if not can_rotate(bits, 128, config):
                continue
            calls = [lambda q=q, s=s, c=config, x=x, bits=bits: gemv(x, q, s, None, bits, 128, None,
                                                                     torch.bfloat16, c, rotate=True)
                     for q, s in copies]
            err = rel_error(calls[0](), ref)
            us = graph_time(calls, replays=10)[0]
            rows.append(dict(row, config=config, us=us, rel_error=err))
            mb = config.get("MB", 1)
            print(f"{shape:>10} q{bits} M={M} MB={mb} {us:7.2f} us err {err:.1e}  {config}", flush=True)
            if err < 2e-2 and (mb not in best or us < best[mb][0]):
                best[mb] = (us, config)
        summary = ", ".join(f"MB={mb} {us:.2f} us ({bf16_us / us:.2f}x bf16)"
                            for mb, (us, _) in sorted(best.items()))
        print(f"{shape:>10} q{bits} M={M} best GEMV: {summary}; [{path}] {path_us:.2f} us, bf16 {bf16_us:.2f}",
              flush=True)
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
