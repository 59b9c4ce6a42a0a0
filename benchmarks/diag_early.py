"""The GEMV's next rows loaded at the top of the loop (``EARLY``) against where ptxas puts them.

ptxas sinks a loop's loads of the next rows to the end of the body, where the
loop-carried copy of their registers waits for them (ncu source counters,
session 13). With ``EARLY`` the loads sit in a block of their own at the top
of the body (the tensor-core GEMV always does this since session 13: run 2
timed it against the sunk loads of commit d490eb2, RESULTS 13d). For each shape, bits and M:
every GEMV candidate of the tuner (M <= 2) without and with ``EARLY``, and
the tensor-core GEMV's candidates (M <= 8, with the FWHT kernel in front, as
``F.linear`` runs it), timed like ``bench_ops.py`` (one CUDA graph over
weight copies spanning the L2 several times) and checked against the float64
reference (session 13's run 5 timed the tensor-core GEMV's shared-memory pair
table with this script's ``--lds`` at commit 35b7976; the table was not kept)::

    python benchmarks/diag_early.py --shapes 14336x4096 4096x4096 --bits 5 4 --m 1 4 8 --json out.json

``--tiles`` adds GEMV tiles of one's own (``VEC,R,PER_SM[,PARTS]``, sized like
the tuner's), ``--no-tc`` leaves the tensor-core GEMV out. The best tile
without and the best with ``EARLY`` are then timed again, side by side in
three alternating rounds.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from bench_ops import captured, case_record, graph_time, interleaved_times, rel_error, sweep, sweep_parser

from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.fwht import fwht
from hlwq_ops.kernels.gemv import can_rotate, gemv
from hlwq_ops.kernels.tcgemv import tc_gemv

BLOCK = 128


def gemv_call(x, bits, K, config):
    def call(q, s):
        return gemv(x, q, s, None, bits, BLOCK, None, torch.bfloat16, config, rotate=True)

    return call


def tc_call(x, bits, K, config):
    k_pad = -(-K // BLOCK) * BLOCK

    def call(q, s):
        xr = fwht(F.pad(x, (0, k_pad - K)), BLOCK, torch.bfloat16)
        return tc_gemv(xr, q, s, None, bits, BLOCK, None, torch.bfloat16, config)

    return call


def tile_config(tile: str, M: int, N: int, k_pad: int, sm: int, bits: int) -> dict:
    """The GEMV config of ``VEC,R,PER_SM[,PARTS]``, sized as the tuner sizes its own (:func:`tuning.gemv_tile`)."""
    fields = tile.split(",")
    if len(fields) not in (3, 4) or not all(f.strip().isdigit() for f in fields):
        raise SystemExit(f"--tiles: expected VEC,R,PER_SM[,PARTS] (3 or 4 whole numbers), found {tile!r}")
    config = tuning.gemv_tile(tuple(int(f) for f in fields), M, N, k_pad, sm, bits)
    if not can_rotate(bits, BLOCK, config):
        raise SystemExit(f"--tiles: {tile!r} gives {config}, which the GEMV cannot run with the rotation in it "
                         f"at Q{bits}")
    return config


def alternate(configs: list[dict], x: torch.Tensor, bits: int, K: int, copies: list) -> list[list[float]]:
    """Each GEMV config's microseconds in three interleaved rounds (one config's single timings moved by up to 3%
    from one graph to the next in session 68; a choice between two tiles at 2% wants them side by side)."""
    graphs = [captured([lambda q=q, s=s, call=gemv_call(x, bits, K, c): call(q, s) for q, s in copies])
              for c in configs]
    return interleaved_times(graphs, len(copies), rounds=3)


def main() -> None:
    p = sweep_parser(__doc__, [1, 4, 8], "diag_early.json")
    p.add_argument("--tiles", nargs="+", default=[], metavar="VEC,R,PER_SM[,PARTS]",
                   help="GEMV tiles to time besides the tuner's (one activation row a program; M <= 2 only, where the "
                        "GEMV is timed), e.g. 16,4,3,4")
    p.add_argument("--no-tc", action="store_true", help="leave out the tensor-core GEMV")
    a = p.parse_args()
    if a.tiles and max(a.m) > 2:
        p.error(f"--tiles times the GEMV, which this script times at M <= 2 only; found --m {' '.join(map(str, a.m))}")
    rows = []
    for case in sweep(a):
        N, K, bits, M, sm = case["N"], case["K"], case["bits"], case["M"], case["sm"]
        copies, x, ref = case["copies"], case["x"], case["ref"]
        k_pad = copies[0][1].shape[1] * BLOCK
        kinds = []
        if M <= 2:
            kinds += [("gemv", c, gemv_call) for c in tuning.candidates("gemv", M, N, k_pad, sm, bits)
                      if not c.get("EARLY")]
            kinds += [("gemv", tile_config(tile, M, N, k_pad, sm, bits), gemv_call) for tile in a.tiles]
        if M <= tuning.TC_MAX_M and bits in (4, 5) and not a.no_tc:
            kinds += [("tc", c, tc_call) for c in tuning._tc_candidates(N, k_pad, sm)]
        results = []
        for kernel, config, make in kinds:
            for early in (False, True) if kernel == "gemv" else (None,):
                cfg = {k: v for k, v in config.items() if k not in ("kernel", "EARLY")}
                if early is not None:
                    cfg["EARLY"] = early
                call = make(x, bits, K, cfg)
                err = rel_error(call(*copies[0]), ref)
                us = graph_time([lambda q=q, s=s, call=call: call(q, s) for q, s in copies], replays=10)[0]
                results.append({"kernel": kernel, "config": cfg, "us": us, "err": err})
                print(f"{'':>10} {kernel} {cfg}: {us:7.2f} us (x{case['bf16_us'] / us:.2f} bf16), err {err:.1e}",
                      flush=True)
        bests = {}
        for kernel in ("gemv", "tc"):
            for early in (False, True, None):
                mine = [r for r in results if r["kernel"] == kernel and r["config"].get("EARLY") == early]
                if mine:
                    bests[kernel, early] = best = min(mine, key=lambda r: r["us"])
                    print(f"{'':>10} best {kernel} EARLY={early}: {best['us']:7.2f} us {best['config']}", flush=True)
        rounds = None
        if ("gemv", False) in bests and ("gemv", True) in bests:
            rounds = alternate([bests["gemv", early]["config"] for early in (False, True)], x, bits, K, copies)
            print(f"{'':>10} best gemv without / with EARLY, alternating rounds: {rounds}", flush=True)
        rows.append(case_record(case, results=results, rounds=rounds))
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
