"""What split K costs the register-operand ws kernel: the kernel as shipped against copies of it with parts of the
split-K epilogue switched off or changed (``--variants``).

- ``nosum``: no split-K sum -- from BM = 128 no :func:`hlwq_ops.kernels.common.reduce_split_k` kernel, below it no
  epilogue after the partitions join (its barrier, arrival counter and the last program's sum): the partials are
  stored, never summed;
- ``nostore``: ``nosum`` with no partials stored either (the store's mask always false, the instructions kept);
- ``noload``: the last program's sum without its loads (zeros);
- ``noatomic``: the program of the last slice sums the tile, without the arrival counter (so without its fences and
  atomics; it may read partials not yet written);
- ``par`` (below BM = 128): the last program's loads of the slices issued in groups (eight slices at BM = 16,
  ``128 / BM`` above: a static loop, masked past SPLIT_K; more spill at BM = 64) instead of one a round trip;
- ``sumkernel64``, ``sumkernel16``: the partials summed by :func:`hlwq_ops.kernels.common.reduce_split_k` after the
  kernel from BM = 64 (or 16) on, as from BM = 128 in the shipped kernel;
- ``acq_rel_reset``: the counter's reset an acquire-release atomic (a fence before it, its result waited for), as
  shipped until session 31, which timed the relaxed reset shipped now as a variant (``relaxed_reset``) against it.

The outputs of ``nosum``, ``nostore``, ``noload`` and ``noatomic`` are wrong by design and not checked; the others'
are (float64 reference, output poisoned first). The copies are ``wsrs.py`` with those lines replaced, written to a
temporary directory and imported as modules of ``hlwq_ops.kernels``. Config: the tuner's first ``wsrs`` candidate::

    python benchmarks/diag_splitk.py --shapes 4096x14336 14336x4096 --bits 5 --m 256 512
    python benchmarks/diag_splitk.py --shapes 4096x14336 4096x4096 1024x4096 --m 4 16 --variants nosum noload
    python benchmarks/diag_splitk.py --shapes 4096x4096 1024x4096 --m 16 64 --variants sumkernel64 --dependent
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import tempfile
from pathlib import Path

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning, wsrs

_SUMS = [("        if SPLIT and BM < 128:", "        if False:"),
         ("    if grid[2] > 1 and BM >= 128:", "    if False:")]
_STORE = "            gl.store(ws_ptr + pid_k.to(gl.int64) * M * N + tile, acc, mask=mask)"
_SLICES = "                acc = _slices_sum(ws_ptr, tile, mask, M.to(gl.int64) * N, split_k, [BN, BM], out_l)"
_PARALLEL = """                acc = gl.zeros([BN, BM], gl.float32, out_l)
                GROUP: gl.constexpr = 8 if BM <= 16 else 128 // BM
                for base in range(0, split_k, GROUP):
                    for j in gl.static_range(GROUP):
                        acc += gl.load(ws_ptr + (base + j) * (M.to(gl.int64) * N) + tile,
                                       mask=mask & (base + j < split_k), other=0.0, cache_modifier=".cg")"""
_ARRIVE = '            if gl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == split_k - 1:'
_RESET = "                _reset(counter)"
VARIANTS = {  # name: (patches, whether its output is right)
    "nosum": (_SUMS, False),
    "nostore": ([*_SUMS, (_STORE, _STORE.replace("mask=mask)", "mask=mask & (M < 0))"))], False),
    "par": ([(_SLICES, _PARALLEL)], True),
    "acq_rel_reset": ([(_RESET, "                gl.atomic_xchg(counter, 0)")], True),
    "noload": ([(_SLICES, "                acc = gl.zeros([BN, BM], gl.float32, out_l)")], False),
    "noatomic": ([(_ARRIVE, "            if pid_k == split_k - 1:"), (_RESET, "                pass")], False),
    "sumkernel64": ([(_SUMS[0][0], "        if SPLIT and BM < 64:"),
                     (_SUMS[1][0], "    if grid[2] > 1 and BM >= 64:")], True),
    "sumkernel16": ([(_SUMS[0][0], "        if SPLIT and BM < 16:"),
                     (_SUMS[1][0], "    if grid[2] > 1 and BM >= 16:")], True),
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
