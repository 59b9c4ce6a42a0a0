"""What split K costs the register-operand ws kernel: the kernel as shipped against copies of it with parts of the
split K switched off (``--variants``).

- ``nosum``: no split-K sum (no :func:`hlwq_ops.kernels.common.reduce_split_k` kernel after it): the partials are
  stored, never summed;
- ``nostore``: ``nosum`` with no partials stored either (the store's mask always false, the instructions kept).

Their outputs are wrong by design and not checked; the shipped kernel's is (float64 reference, output poisoned
first). The copies are ``wsrs.py`` with those lines replaced, written to a temporary directory and imported as
modules of ``hlwq_ops.kernels`` (``bench_ops.kernel_variant``). Config: the tuner's
first ``wsrs`` candidate; ``--dependent`` launches every kernel with PDL, as ``hlwq.linear`` does on sm_90::

    python benchmarks/diag_splitk.py --shapes 4096x14336 4096x4096 1024x4096 --m 4 16 64 --dependent

Until session 31 the kernel summed split K in itself below BM = 128 (the last program of each tile to arrive, by an
arrival counter); that session's variants of that sum (``noload``, ``noatomic``, ``par``, ``relaxed_reset`` -- named
``acq_rel_reset`` once the relaxed reset shipped --, ``sumkernel64``, ``sumkernel16``; ``benchmarks/RESULTS.md``
31a-b, runs 1, 2 and 5) patched lines removed with it: this script at 9e67fe7 runs them on the kernel of that tree.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from bench_ops import kernel_variant, report_case, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning, wsrs

_SUM = [("    if grid[2] > 1:  # (the kernel stored the partials only)", "    if False:")]
_STORE = "            gl.store(ws_ptr + pid_k.to(gl.int64) * M * N + tile, acc, mask=mask)"
VARIANTS = {  # name: patches (their outputs are wrong by design)
    "nosum": _SUM,
    "nostore": [*_SUM, (_STORE, _STORE.replace("mask=mask)", "mask=mask & (M < 0))"))],
}


def main() -> None:
    p = sweep_parser(__doc__, [256, 512], "diag_splitk.json")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["nosum", "nostore"])
    p.add_argument("--dependent", action="store_true",
                   help="launch every kernel with programmatic dependent launch, as hlwq.linear does on sm_90")
    a = p.parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as folder:
        kernels = {"shipped": wsrs} | {name: kernel_variant(wsrs, name, VARIANTS[name], Path(folder))
                                        for name in a.variants}
        for case in sweep(a):
            M, N, K, bits = case["M"], case["N"], case["K"], case["bits"]
            config = tuning.candidates("wsrs", M, N, K, case["sm"], bits)[0]
            times, errors = {}, {}
            for name, module in kernels.items():
                launch = functools.partial(module.ws_rs, dependent=a.dependent)
                times[name], errors[name] = wsrs_alone(case, config, launch=launch)
            # (the copies' outputs are wrong by design: the shipped kernel's is checked)
            ok &= report_case(rows, case, f"wsrs S{config['SPLIT_K']}", config, errors["shipped"], times)
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
