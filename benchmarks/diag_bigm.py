"""The register-operand ws kernel past M = 64 (BM = 128 and 256), config by config, beside what the tuner picks.

For each shape, bits and M: bf16 ``F.linear`` and ``hlwq.linear`` as tuned
(printed by the sweep, with the config the tuner picked), then each ``wsrs``
config below alone on rotated activations, checked against float64 and timed
like ``bench_ops.py`` (one CUDA graph over weight copies spanning the L2
several times): the tuner's ``wsrs`` candidates, and the first of them at
BM = 128 with the norms on the weights (``NORM_ACC=False``), at BM = 256 with
eight ``[BM, 16]`` activation boxes a step and with half the split::

    python benchmarks/diag_bigm.py --shapes 14336x4096 4096x14336 --bits 5 4 --m 128 256 512 2048 --json out.json
"""

from __future__ import annotations

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning


def variants(M: int, N: int, K: int, sm: int, bits: int) -> list[dict]:
    """The tuner's ``wsrs`` candidates, then the variants this script also times."""
    configs = tuning.candidates("wsrs", M, N, K, sm, bits)
    first = configs[0]
    if first["BM"] == 128:
        configs += [dict(first, NORM_ACC=False)]
    if first["BM"] == 256:
        configs += [dict(first, XBOX=16)]
        if first["SPLIT_K"] > 1:
            configs += [dict(first, SPLIT_K=first["SPLIT_K"] // 2)]
    return configs


def label(config: dict) -> str:
    """A config in a few characters: tile, split, box width, rings, ``w16`` for the norms on the weights."""
    return (f"BM={config['BM']} S{config['SPLIT_K']} X{config['XBOX']} Q{config['QSTAGES']}-{config['XSTAGES']}"
            f"{'' if config.get('NORM_ACC', True) else ' w16'}")


def main() -> None:
    a = sweep_parser(__doc__, [128, 256, 512, 2048], "diag_bigm.json").parse_args()
    rows, ok = [], True
    for case in sweep(a):
        bits, M, N, K = case["bits"], case["M"], case["N"], case["K"]
        if K % 128:
            raise SystemExit(f"diag_bigm: K must be a multiple of 128, got {K}")
        picked = tuning.tuned_choices(M, N, K, bits)
        print(f"{'':>10} tuned: {picked}", flush=True)
        result = {"tuned": picked, "configs": []}
        for config in variants(M, N, K, case["sm"], bits):
            us, err = wsrs_alone(case, config)
            ok &= err < 1e-2
            print(f"{'':>10} wsrs {label(config):<28} {us:8.2f} us (x bf16 {case['bf16_us'] / us:.2f}, "
                  f"x path {case['path_us'] / us:.2f}), err {err:.1e}", flush=True)
            result["configs"].append(dict(config=config, us=us, err=err))
        rows.append(case_record(case, **result))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
