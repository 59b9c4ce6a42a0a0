# Record: ran on the H200 in session 42 at 5e54393 (log: h200_s42_run1_dense5.log); the element-dense prototype it
# times was removed after it (benchmarks/NOTES.md session 42), so it no longer runs against the library.
"""Q5 kernels on the element-dense arrangement (``DENSE5``) against the library's planes, on a GPU: the GEMV at
M = 1 and the register-operand ws kernel (:mod:`hlwq_ops.kernels.wsrs`) at M = 16 and 64.

What a change of the Q5 layout would buy before it is made: the same bytes, an element's eight codes as one 40-bit
string (:func:`hlwq_ops.format.element_dense`), so that each code is one shift and the E/O merge goes. Offline
(Triton 3.6, sm_90, ``offline_sass.py --dense5``) the GEMV's loop issues 4.28 instructions a weight instead of 4.89
(VEC = 4, R = 8, split K) and 4.21 instead of 4.98 (VEC = 16, R = 4, four warp parts; Q4: 3.97), and the ws kernel's
consumer loop 267-275 instructions a step instead of 319-327 at BM = 16 (64 codes a thread).

For each shape (the six of issue 3), every candidate config is timed on both arrangements in one CUDA graph over
weight copies past the L2 (``tuning._time_over``), three rounds alternating: the GEMV rotating the activations
itself, the ws kernel on activations rotated once beforehand (its FWHT not timed). Printed: the best config of each
arrangement and its median, and whether the two outputs are bit-equal (they should be: the same centroids in the
same order)::

    python benchmarks/diag_dense5.py [--shapes 14336x4096 ...] [--ws-m 16 64] [--json diag_dense5.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from hlwq_ops.hadamard import fwht_ref
from hlwq_ops.kernels import note_weight, tuning
from hlwq_ops.kernels.common import sm_count
from hlwq_ops.format import element_dense
from hlwq_ops.kernels.gemv import can_rotate, gemv
from hlwq_ops.kernels.wgmma import permute_activations
from hlwq_ops.kernels.wsmma import runs_on as ws_runs_on
from hlwq_ops.kernels.wsrs import activation_span, ws_rs

SHAPES = ("4096x4096", "1024x4096", "14336x4096", "4096x14336", "12288x4096", "4096x12288")


def gemv_runner(x: torch.Tensor, dense: bool):
    """``run(config, qdata, scale)``: the GEMV at M = len(x), rotating ``x`` itself."""
    def run(config, qq, ss):
        return gemv(x, qq, ss, None, 5, 128, None, torch.bfloat16, config, rotate=True, dense5=dense)
    return run


def ws_runner(x: torch.Tensor, dense: bool):
    """``run(config, qdata, scale)``: the register-operand ws kernel on ``x`` rotated (beforehand, once per order)."""
    xr = fwht_ref(x.float(), 128)
    orders = {}

    def run(config, qq, ss):
        span = activation_span(config)
        if span not in orders:
            orders[span] = permute_activations(xr, torch.bfloat16, span)
        return ws_rs(orders[span], qq, ss, None, 5, 128, torch.bfloat16, config, dense5=dense)
    return run


def time_layouts(label: str, N: int, K: int, configs: list[dict], runner, x: torch.Tensor,
                 rounds: int = 3) -> list[dict]:
    """Each config on planes and element-dense codes: medians over ``rounds`` alternating rounds."""
    w = torch.randn(N, K, device=x.device, dtype=torch.bfloat16) * 0.02
    q, s = torch.ops.hlwq.quantize(w, 5, 128)
    note_weight(q, s, 5, 128)
    runs = {False: runner(x, False), True: runner(x, True)}
    weights = {False: tuning._weight_set(q, s)}
    weights[True] = [(element_dense(qq, 128), ss) for qq, ss in weights[False]]
    rows = []
    for config in configs:
        equal = torch.equal(runs[False](config, *weights[False][0]), runs[True](config, *weights[True][0]))
        times = {False: [], True: []}
        for _ in range(rounds):
            for dense in (False, True):
                times[dense].append(1e3 * tuning._time_over(runs[dense], config, weights[dense], reps=20))
        row = dict(kernel=label, shape=f"{N}x{K}", M=x.shape[0], config=config,
                   planes_us=sorted(times[False])[rounds // 2], dense_us=sorted(times[True])[rounds // 2],
                   planes_runs=times[False], dense_runs=times[True], bit_equal=equal)
        print(f"{label} {N}x{K} M={x.shape[0]} {config}: planes {row['planes_us']:.2f} us, dense "
              f"{row['dense_us']:.2f} us ({100 * (row['dense_us'] / row['planes_us'] - 1):+.1f}%), bit-equal {equal}",
              flush=True)
        rows.append(row)
    best_p = min(rows, key=lambda r: r["planes_us"])
    best_d = min(rows, key=lambda r: r["dense_us"])
    print(f"{label} {N}x{K} M={x.shape[0]} best: planes {best_p['planes_us']:.2f} us {best_p['config']}; dense "
          f"{best_d['dense_us']:.2f} us {best_d['config']} "
          f"({100 * (best_d['dense_us'] / best_p['planes_us'] - 1):+.1f}%)", flush=True)
    del weights
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES))
    p.add_argument("--ws-m", nargs="*", type=int, default=[16, 64], help="M for the ws kernel (none: GEMV only)")
    p.add_argument("--json", default="diag_dense5.json")
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    torch.manual_seed(0)
    dev = torch.device("cuda")
    rows = []
    for shape in a.shapes:
        N, K = map(int, shape.split("x"))
        gemvs = [c for c in tuning.candidates("gemv", 1, N, K, sm_count(dev), 5) if can_rotate(5, 128, c)]
        rows += time_layouts("gemv", N, K, gemvs, gemv_runner, torch.randn(1, K, device=dev, dtype=torch.bfloat16))
        for M in a.ws_m if ws_runs_on(dev) else []:
            ws = tuning.candidates("wsrs", M, N, K, sm_count(dev), 5)
            rows += time_layouts("wsrs", N, K, ws, ws_runner, torch.randn(M, K, device=dev, dtype=torch.bfloat16))
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
