"""What split K costs the register-operand ws kernel: the kernel as shipped against copies of it with parts of the
split-K epilogue switched off.

``nosum``: no split-K sum -- from BM = 128 no :func:`hlwq_ops.kernels.common.reduce_split_k` kernel, below it no
epilogue after the partitions join (its barrier, arrival counter and the last program's sum): the partials are
stored, never summed; ``nostore``: no partials stored either (the store's mask always false, the instructions
kept). The copies' outputs are wrong by design and not checked; the shipped kernel's is (float64 reference, output
poisoned first). The copies are ``wsrs.py`` with those lines
replaced, written to a temporary directory and imported as modules of ``hlwq_ops.kernels``. Config: the tuner's first
``wsrs`` candidate::

    python benchmarks/diag_splitk.py --shapes 4096x14336 14336x4096 --bits 5 --m 256 512
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning, wsrs

_SUMS = [("        if SPLIT and BM < 128:", "        if False:"),
         ("    if grid[2] > 1 and BM >= 128:", "    if False:")]
_STORE = "            gl.store(ws_ptr + pid_k.to(gl.int64) * M * N + tile, acc, mask=mask)"
VARIANTS = {
    "nosum": _SUMS,
    "nostore": [*_SUMS, (_STORE, _STORE.replace("mask=mask)", "mask=mask & (M < 0))"))],
}


def variant(name: str, patches: list[tuple[str, str]], folder: Path):
    """``wsrs.py`` with ``patches`` applied, imported as ``hlwq_ops.kernels.wsrs_<name>``."""
    source = Path(wsrs.__file__).read_text()
    for old, new in patches:
        if old not in source:
            raise SystemExit(f"diag_splitk: wsrs.py no longer has the line {old.strip()!r}; update the patch")
        source = source.replace(old, new)
    path = folder / f"wsrs_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"hlwq_ops.kernels.wsrs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    a = sweep_parser(__doc__, [256, 512], "diag_splitk.json").parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as folder:
        kernels = {"shipped": wsrs} | {name: variant(name, p, Path(folder)) for name, p in VARIANTS.items()}
        for case in sweep(a):
            M, N, K, bits = case["M"], case["N"], case["K"], case["bits"]
            config = tuning.candidates("wsrs", M, N, K, case["sm"], bits)[0]
            times, errors = {}, {}
            for name, module in kernels.items():
                times[name], errors[name] = wsrs_alone(case, config, launch=module.ws_rs)
            err = errors["shipped"]  # (the copies' outputs are wrong by design)
            ok &= err < 1e-2
            print(f"{'':>10} wsrs S{config['SPLIT_K']} (err {err:.1e}): "
                  + ", ".join(f"{name} {us:.2f} us" for name, us in times.items()), flush=True)
            rows.append(case_record(case, config=config, err=err, us=times))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
