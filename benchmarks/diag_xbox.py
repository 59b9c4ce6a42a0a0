"""The register-operand ws kernel's two activation orders against each other, in one process (sm_90, Gluon).

``XBOX=16`` reads a step's activations as eight ``[BM, 16]`` TMA boxes
(activations permuted per whole row), ``XBOX=64`` as two ``[BM, 64]`` boxes
(permuted within each block of 128; :func:`hlwq_ops.kernels.wsrs.activation_span`).
For each shape, bits and M: bf16 ``F.linear`` and ``hlwq.linear`` on its
default path (printed by the sweep), then the tuner's first ``wsrs``
candidate with each width, alone on rotated activations, each checked against
float64 and timed twice, interleaved, like ``bench_ops.py`` (one CUDA graph
over weight copies spanning the L2 several times); RESULTS.md 20b::

    python benchmarks/diag_xbox.py --shapes 14336x4096 4096x14336 --bits 5 4 --m 8 16 32 64 --json out.json
"""

from __future__ import annotations

from bench_ops import case_record, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning

WIDTHS = (16, 64)


def main() -> None:
    a = sweep_parser(__doc__, [8, 16, 32, 64], "diag_xbox.json").parse_args()
    rows, ok = [], True
    for case in sweep(a):
        bits, M, N, K = case["bits"], case["M"], case["N"], case["K"]
        if K % 128:
            raise SystemExit(f"diag_xbox: K must be a multiple of 128, got {K}")
        candidate = tuning.candidates("wsrs", M, N, K, case["sm"], bits)[0]
        result = {"candidate": candidate}
        for _ in range(2):
            for width in WIDTHS:
                us, err = wsrs_alone(case, dict(candidate, XBOX=width))
                result[f"err{width}"] = max(err, result.get(f"err{width}", 0.0))
                ok &= err < 1e-2
                result.setdefault(f"us{width}", []).append(us)
        us16, us64 = min(result["us16"]), min(result["us64"])
        print(f"{'':>10} wsrs BM={candidate['BM']} split={candidate['SPLIT_K']}: XBOX=16 {us16:6.2f} us, XBOX=64 "
              f"{us64:6.2f} us ({(us64 / us16 - 1) * 100:+.1f}%), err {result['err16']:.1e} {result['err64']:.1e}",
              flush=True)
        rows.append(case_record(case, **result))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
