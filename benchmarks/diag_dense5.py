"""The Q5 GEMV on the element-dense arrangement (``DENSE5``) against the library's planes, M = 1, on a GPU.

What a change of the Q5 layout would buy before it is made: the same bytes, an element's eight codes as one 40-bit
string (:func:`hlwq_ops.kernels.gemv.element_dense`), so that each code is one shift and the E/O merge goes. Offline
(Triton 3.6, sm_90, ``offline_sass.py --dense5``) the loop issues 4.28 instructions a weight instead of 4.89 (VEC = 4,
R = 8, split K) and 4.21 instead of 4.98 (VEC = 16, R = 4, four warp parts); Q4 issues 3.97.

For each shape (the six of issue 3), every GEMV candidate config is timed on both arrangements, rotating the
activations in the kernel, in one CUDA graph over weight copies past the L2 (``tuning._time_over``), three rounds
alternating; printed: the best config of each and its median, and whether the two outputs are bit-equal (they
should be: the same centroids in the same order)::

    python benchmarks/diag_dense5.py [--shapes 14336x4096 ...] [--json diag_dense5.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from hlwq_ops.kernels import note_weight, tuning
from hlwq_ops.kernels.common import sm_count
from hlwq_ops.kernels.gemv import can_rotate, element_dense, gemv

SHAPES = ("4096x4096", "1024x4096", "14336x4096", "4096x14336", "12288x4096", "4096x12288")


def time_layouts(N: int, K: int, rounds: int = 3) -> list[dict]:
    """Each rotating GEMV candidate on planes and element-dense codes: medians over ``rounds`` alternating rounds."""
    dev = torch.device("cuda")
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02
    q, s = torch.ops.hlwq.quantize(w, 5, 128)
    note_weight(q, s, 5, 128)
    d = element_dense(q, 128)
    x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    configs = [c for c in tuning.candidates("gemv", 1, N, K, sm_count(dev), 5) if can_rotate(5, 128, c)]

    def runner(dense):
        def run(config, qq, ss):
            return gemv(x, qq, ss, None, 5, 128, None, torch.bfloat16, config, rotate=True, dense5=dense)
        return run

    planes, dense = runner(False), runner(True)
    weights = {False: tuning._weight_set(q, s), True: [(element_dense(qq, 128), ss) for qq, ss in
                                                      tuning._weight_set(q, s)]}
    rows = []
    for config in configs:
        equal = torch.equal(planes(config, q, s), dense(config, d, s))
        times = {False: [], True: []}
        for _ in range(rounds):
            for layout in (False, True):
                run = dense if layout else planes
                times[layout].append(1e3 * tuning._time_over(run, config, weights[layout], reps=20))
        row = dict(shape=f"{N}x{K}", config=config, planes_us=sorted(times[False])[rounds // 2],
                   dense_us=sorted(times[True])[rounds // 2], planes_runs=times[False], dense_runs=times[True],
                   bit_equal=equal)
        print(f"{N}x{K} {config}: planes {row['planes_us']:.2f} us, dense {row['dense_us']:.2f} us "
              f"({100 * (row['dense_us'] / row['planes_us'] - 1):+.1f}%), bit-equal {equal}", flush=True)
        rows.append(row)
    best_p = min(rows, key=lambda r: r["planes_us"])
    best_d = min(rows, key=lambda r: r["dense_us"])
    print(f"{N}x{K} best: planes {best_p['planes_us']:.2f} us {best_p['config']}; dense {best_d['dense_us']:.2f} us "
          f"{best_d['config']} ({100 * (best_d['dense_us'] / best_p['planes_us'] - 1):+.1f}%)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES))
    p.add_argument("--json", default="diag_dense5.json")
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    torch.manual_seed(0)
    rows = []
    for shape in a.shapes:
        N, K = map(int, shape.split("x"))
        rows += time_layouts(N, K)
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
