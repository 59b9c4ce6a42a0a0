"""What split K costs the register-operand ws kernel: the kernel as shipped against copies of it with parts of the
split K switched off (``--variants``).

- ``nosum``: no split-K sum (no :func:`hlwq_ops.kernels.common.reduce_split_k` kernel after it): the partials are
  stored, never summed;
- ``nostore``: ``nosum`` with no partials stored either (the store's mask always false, the instructions kept).

Their outputs are wrong by design and not checked; the shipped kernel's is (float64 reference, output poisoned
first). The copies are ``wsrs.py`` with those lines replaced, written to a temporary directory and imported as
modules of ``hlwq_ops.kernels`` (:func:`variant`, which ``diag_reset.py`` uses on the GEMV). Config: the tuner's
first ``wsrs`` candidate; ``--dependent`` launches every kernel with PDL, as ``hlwq.linear`` does on sm_90::

    python benchmarks/diag_splitk.py --shapes 4096x14336 4096x4096 1024x4096 --m 4 16 64 --dependent

Until session 31 the kernel summed split K in itself below BM = 128 (the last program of each tile to arrive, by an
arrival counter); that session's variants of that sum (``noload``, ``noatomic``, ``par``, ``relaxed_reset`` -- named
``acq_rel_reset`` once the relaxed reset shipped --, ``sumkernel64``, ``sumkernel16``; ``benchmarks/RESULTS.md``
31a-b, runs 1, 2 and 5) patched lines removed with it: this script at 9e67fe7 runs them on the kernel of that tree.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import tempfile
from pathlib import Path

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning, wsrs

_SUM = [("    if grid[2] > 1:  # (the kernel stored the partials only)", "    if False:")]
_STORE = "            gl.store(ws_ptr + pid_k.to(gl.int64) * M * N + tile, acc, mask=mask)"
VARIANTS = {  # name: (patches, whether its output is right)
    "nosum": (_SUM, False),
    "nostore": ([*_SUM, (_STORE, _STORE.replace("mask=mask)", "mask=mask & (M < 0))"))], False),
}


def variant(name: str, patches: list[tuple[str, str]], folder: Path, original=wsrs):
    """The source of the kernel module ``original`` (``wsrs``) with ``patches`` applied, imported as
    ``hlwq_ops.kernels.<its name>_<name>``."""
    stem = original.__name__.rsplit(".", 1)[-1]
    source = Path(original.__file__).read_text()
    for old, new in patches:
        if old not in source:
            raise SystemExit(f"{stem}.py no longer has the line {old.strip()!r}; update the patch")
        source = source.replace(old, new)
    path = folder / f"{stem}_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"hlwq_ops.kernels.{stem}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = sweep_parser(__doc__, [256, 512], "diag_splitk.json")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["nosum", "nostore"])
    p.add_argument("--dependent", action="store_true",
                   help="launch every kernel with programmatic dependent launch, as hlwq.linear does on sm_90")
    a = p.parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as folder:
        chosen = {name: VARIANTS[name] for name in a.variants}
        kernels = {"shipped": wsrs} | {name: variant(name, p, Path(folder)) for name, (p, _) in chosen.items()}
        checked = ["shipped"] + [name for name, (_, right) in chosen.items() if right]
        for case in sweep(a):
            M, N, K, bits = case["M"], case["N"], case["K"], case["bits"]
            config = tuning.candidates("wsrs", M, N, K, case["sm"], bits)[0]
            times, errors = {}, {}
            for name, module in kernels.items():
                launch = functools.partial(module.ws_rs, dependent=a.dependent)
                times[name], errors[name] = wsrs_alone(case, config, launch=launch)
            err = max(errors[name] for name in checked)  # (the other copies' outputs are wrong by design)
            ok &= err < 1e-2
            print(f"{'':>10} wsrs S{config['SPLIT_K']} (err {err:.1e}): "
                  + ", ".join(f"{name} {us:.2f} us" for name, us in times.items()), flush=True)
            rows.append(case_record(case, config=config, err=err, errors={n: errors[n] for n in checked}, us=times))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
