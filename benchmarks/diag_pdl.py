"""``hlwq.linear`` with and without programmatic dependent launch (PDL), in the same process.

With PDL (``HLWQ_PDL=1`` on sm_90 and newer, ``hlwq_ops.kernels.common``)
the GEMV, the tensor-core GEMV, the wgmma kernel, the register-operand ws
kernel with its split-K sum, and the FWHT launch while the kernel before them
finishes; the two GEMVs ask the L2 for their first rows before they wait for
it. Without it (``HLWQ_PDL=0``) they launch as before. (Unset, only the
tensor-core kernels behind their FWHT launch with it:
``hlwq_ops.kernels.launches_dependent``.) For each shape, bits and M: bf16 ``F.linear``
and ``hlwq.linear`` on its default path (tuned once, so both ways run the same tiles), timed like ``bench_ops.py``
(one CUDA graph over weight copies spanning the L2 several times: each call
follows another call of the same op, as in ``bench_ops``), with PDL and
without, and the outputs of the two compared bit for bit::

    python benchmarks/diag_pdl.py --shapes 14336x4096 4096x4096 --bits 5 4 --m 1 4 8 16 --json out.json
"""

from __future__ import annotations

import json
import os

import torch
from bench_ops import case_record, graph_time, sweep, sweep_parser

from hlwq_ops import kernels
from hlwq_ops.kernels.common import pdl_requested


def main() -> None:
    p = sweep_parser(__doc__, [1, 4, 8, 16], "diag_pdl.json")
    a = p.parse_args()
    rows = []
    os.environ["HLWQ_PDL"] = "1"  # (read once per process: cleared below for each change)
    pdl_requested.cache_clear()
    for case in sweep(a):  # times the default path, PDL on (path_us)
        bits, K, x = case["bits"], case["K"], case["x"]
        calls = [lambda q=q, s=s, x=x, bits=bits, K=K: kernels.linear(x, q, s, None, bits, 128, K, None)
                 for q, s in case["copies"]]
        with_pdl = calls[0]()
        os.environ["HLWQ_PDL"] = "0"
        pdl_requested.cache_clear()
        try:
            serial_us = graph_time(calls, replays=10)[0]
            same = torch.equal(calls[0](), with_pdl)
        finally:
            os.environ["HLWQ_PDL"] = "1"
            pdl_requested.cache_clear()
        again_us = graph_time(calls, replays=10)[0]  # PDL on again: how much the timing moves by itself
        print(f"{'':>10} PDL off {serial_us:7.2f} us, on {case['path_us']:7.2f} / {again_us:7.2f} us "
              f"(x{serial_us / case['path_us']:.3f}), same output {same}", flush=True)
        rows.append(case_record(case, serial_us=serial_us, again_us=again_us, same=same))
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
