"""The split-K arrival counter's reset in the GEMV: relaxed (shipped) against acquire-release (shipped until session
31), at M = 1 on the shapes whose slices split K.

The last program of a row range resets its counter to zero for the next call
(:func:`hlwq_ops.kernels.common.reset_counter`). An acquire-release atomic there puts a fence before it (the program
waits for its output stores) and waits for the atomic's result; a relaxed one does neither. ``acq_rel`` is
``gemv.py`` with the reset written as before. Times the tuner's first three GEMV candidates with both (rotation in
the kernel, as ``hlwq.linear`` runs it; twice each, interleaved, the better of two), each output checked against the
float64 product of the dequantized weight::

    python benchmarks/diag_reset.py --shapes 4096x14336 4096x12288 --bits 5 4 --m 1
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import torch
from bench_ops import graph_time, kernel_variant, rel_error, report_case, save_rows, sweep, sweep_parser

from hlwq_ops.kernels import tuning

gemv = importlib.import_module("hlwq_ops.kernels.gemv")  # (the package's `gemv` is the function)

ACQ_REL = [("reset_counter(counter)", "tl.atomic_xchg(counter, 0)")]


def time_gemv(module, case: dict, config: dict) -> tuple[float, float]:
    """Microseconds per call of ``module.gemv`` in ``config`` over the case's weight copies, and its relative error."""
    x, bits = case["x"], case["bits"]

    def call(q, s):
        return module.gemv(x, q, s, None, bits, 128, None, torch.bfloat16, config, rotate=True)

    err = rel_error(call(*case["copies"][0]), case["ref"])
    return graph_time([lambda q=q, s=s: call(q, s) for q, s in case["copies"]], replays=10)[0], err


def main() -> None:
    a = sweep_parser(__doc__, [1], "diag_reset.json").parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as folder:
        kernels = {"relaxed": gemv, "acq_rel": kernel_variant(gemv, "acq_rel", ACQ_REL, Path(folder))}
        for case in sweep(a):
            M, N, K, bits = case["M"], case["N"], case["K"], case["bits"]
            for config in tuning.candidates("gemv", M, N, K, case["sm"], bits)[:3]:
                times, errors = {}, {}
                for _ in range(2):
                    for name, module in kernels.items():
                        us, errors[name] = time_gemv(module, case, config)
                        times[name] = min(us, times.get(name, us))
                ok &= report_case(rows, case, f"gemv {config}", config, max(errors.values()), times)
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
