"""More programs for `wsrs` on the small shapes: twice the shipped split of K, and at M > 16 half the BM.

On 1024 x 4096 at M = 4..64 and 4096 x 4096 at M = 64 ``hlwq.linear`` is below bf16 (RESULTS 32a-b). Split K
stops at four blocks a slice (:func:`hlwq_ops.kernels.tuning._ws_split`), so 1024 x 4096 runs 64 programs on 132
SMs. This times each of the tuner's `wsrs` candidates as shipped, with ``SPLIT_K`` doubled (``split2x``, where a
slice keeps a block), and with ``BM`` halved (``bm/2``, the activation rows in twice as many tiles, split as the
tuner would split them), each with the split-K sum kernel after it, alone on rotated activations
(``bench_ops.wsrs_alone``, no PDL; twice, interleaved, the better of two), every output checked against the float64
product of the dequantized weight. The tuned path's line (FWHT included) and its choice come first::

    python benchmarks/diag_split.py --shapes 1024x4096 4096x4096 --bits 5 4 --m 16 32 64
"""

from __future__ import annotations

from bench_ops import report_case, save_rows, sweep, sweep_parser, wsrs_alone

from hlwq_ops.kernels import tuning


def variants(config: dict, case: dict) -> dict[str, dict]:
    """The candidate as shipped and the variants of it worth timing on ``case``."""
    out = {"shipped": config}
    blocks = case["K"] // 128
    if blocks // (2 * config["SPLIT_K"]) >= 1:
        out["split2x"] = dict(config, SPLIT_K=2 * config["SPLIT_K"])
    if config["BM"] > 16 and config.get("PHASES", 1) == 1:
        BM = config["BM"] // 2
        out["bm/2"] = dict(config, BM=BM, SPLIT_K=tuning._ws_split(case["M"], case["N"], case["K"], case["sm"], BM))
    return out


def main() -> None:
    a = sweep_parser(__doc__, [16, 32, 64], "diag_split.json").parse_args()
    rows, ok = [], True
    for case in sweep(a):
        M, N, K = case["M"], case["N"], case["K"]
        # (the path's choice: linear_cases ran hlwq.linear on the case)
        print(f"{'':>10} tuned: {tuning.tuned_choices(M, N, K, case['bits'])}", flush=True)
        for config in tuning.candidates("wsrs", M, N, K, case["sm"], case["bits"]):
            times, errors = {}, {}
            for _ in range(2):
                for name, variant in variants(config, case).items():
                    us, errors[name] = wsrs_alone(case, variant)
                    times[name] = min(us, times.get(name, us))
            ok &= report_case(rows, case, f"wsrs {config}", config, max(errors.values()), times)
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
