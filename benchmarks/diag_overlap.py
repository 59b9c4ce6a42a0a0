"""Where a step of the register-operand ws kernel goes: the kernel as shipped against copies of it with its decode or
its MMAs changed (``benchmarks/NOTES.md`` session 24).

- ``pin``: each pair of k-tiles decoded and its two MMAs issued before the next pair is decoded, so that a
  warpgroup's own MMAs could run under the rest of its decode. Written plainly, ptxas schedules every decode of the
  step above the step's first MMA, and a warpgroup barrier alone does not stop it (register-only work moves across
  it); here the codebook register the next pair's shuffles read is made to depend on a load after the barrier.
  Its output is right and checked (the same bits as the shipped kernel's).
- ``mma1``: the eight decoded tiles summed and one MMA a step on the sum: the decode (and the loads) with 1/8 of
  the MMAs.
- ``nodec``: no decode, one conversion of the words standing in for all eight tiles: the MMAs and the loads alone.

``mma1``'s and ``nodec``'s outputs are wrong by design and not checked; the shipped kernel's is (float64 reference,
output poisoned first). The copies are ``wsrs.py`` with lines replaced (:func:`diag_splitk.variant`). Configs: the
tuner's first ``--cands`` ``wsrs`` candidates, each timed twice, the kernels alternating::

    python benchmarks/diag_overlap.py --shapes 14336x4096 --bits 5 --m 128 256 512 --variants pin mma1 nodec
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone
from diag_splitk import variant

from hlwq_ops.kernels import tuning, wsrs

_NAMES = ["lo", "hi", "lo >> 8", "hi >> 8", "lo >> 16", "hi >> 16", "lo >> 24", "hi >> 24"]
_DECODES = "".join(f"            a{t} = _a_tile(c_lane, {src}, dtype)\n" for t, src in enumerate(_NAMES))
_NORMS = "            if not NORM_ACC:\n" + "".join(f"                a{t} = a{t} * this_norm\n" for t in range(8))
_WAIT = "            mbarrier.wait(x_ready.index(xs), (i // XSTAGES) & 1)\n"


def _mma(t: int) -> str:
    acc = "acc, use_acc=not NORM_ACC" if t == 0 else "step"
    return f"            step = warpgroup_mma(a{t}, _x_tile(x_smem, xs, {t}, XBOX), {acc}, is_async=True)\n"


_STEP = _DECODES + _NORMS + _WAIT + "".join(_mma(t) for t in range(8))


def _pinned_step() -> str:
    out = []
    for t, src in enumerate(_NAMES):
        if t and t % 2 == 0:
            out.append("            c_lane = _pinned(c_lane, c_ptr)\n")
        out.append(f"            a{t} = _a_tile(c_lane, {src}, dtype)\n")
        out.append(f"            if not NORM_ACC:\n                a{t} = a{t} * this_norm\n")
        if t == 0:
            out.append(_WAIT)
        out.append(_mma(t))
    return "".join(out)


_PINNED = '''    @gluon.jit
    def _pinned(c_lane, c_ptr):
        """``c_lane``, made to depend on a load after a warpgroup barrier (the MMAs before it stay before it)."""
        _cta_barrier()
        z = gl.load(c_ptr)  # a coherent load: not movable above the barrier
        return (c_lane.to(gl.float32, bitcast=True) + (z - z)).to(gl.int32, bitcast=True)

    @gluon.jit
    def _consumer('''

VARIANTS = {
    "pin": [("    @gluon.jit\n    def _consumer(", _PINNED), (_STEP, _pinned_step())],
    "mma1": [(_WAIT + "".join(_mma(t) for t in range(8)),
              "            a0 = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))\n" + _WAIT + _mma(0))],
    "nodec": [(_DECODES, "            a0 = lo.to(gl.int32, bitcast=True).to(dtype)\n"
               + "".join(f"            a{t} = a0\n" for t in range(1, 8)))],
}


def main() -> None:
    p = sweep_parser(__doc__, [128, 256, 512], "diag_overlap.json")
    p.add_argument("--cands", type=int, default=1, help="the tuner's first CANDS wsrs configs")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=INT",
                   help="config keys to override in every candidate, e.g. QSTAGES=3 XSTAGES=3")
    a = p.parse_args()
    changes = {k: int(v) for k, v in (kv.split("=") for kv in a.set)}
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as folder:
        kernels = {"shipped": wsrs} | {v: variant(v, VARIANTS[v], Path(folder)) for v in a.variants}
        for case in sweep(a):
            M, N, K, bits = case["M"], case["N"], case["K"], case["bits"]
            for config in tuning.candidates("wsrs", M, N, K, case["sm"], bits)[:a.cands]:
                config = config | changes
                times, errors = {}, {}
                for _ in range(2):
                    for name, module in kernels.items():
                        t, errors[name] = wsrs_alone(case, config, launch=module.ws_rs)
                        times.setdefault(name, []).append(round(t, 2))
                ok &= errors["shipped"] < 1e-2 and ("pin" not in errors or errors["pin"] == errors["shipped"])
                tag = " ".join(f"{k}{v}" for k, v in config.items() if k != "kernel")
                print(f"{'':>10} wsrs [{tag}] err shipped {errors['shipped']:.2e}"
                      + (f" pin {errors['pin']:.2e}" if "pin" in errors else "") + ": "
                      + ", ".join(f"{name} {t}" for name, t in times.items()), flush=True)
                rows.append(case_record(case, config=config, err=errors, us=times))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
