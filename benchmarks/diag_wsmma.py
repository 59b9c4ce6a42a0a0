"""The warp-specialized tensor-core kernel (:mod:`hlwq_ops.kernels.wsmma`) against the paths in use, M = 16..2048.

First a correctness pass on awkward shapes (N not a multiple of 128, M not a
multiple of the tile, split K, a bias, float16 activations, bits 4 and 5)
against a float64 reference; then, for each shape, bits and M: bf16
``F.linear``, ``hlwq.linear`` on its default path, dequantize + cuBLAS, and the
kernel on a few tiles, alone on rotated activations and with the FWHT in
front. Timed like ``bench_ops.py`` (one CUDA graph over weight copies spanning
the L2 several times)::

    python benchmarks/diag_wsmma.py --shapes 14336x4096 4096x14336 --bits 5 --m 16 128 --json out.json
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from bench_ops import case_record, forced_path, graph_time, rel_error, save_rows, sweep, sweep_parser

from hlwq_ops import kernels
from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.fwht import fwht
from hlwq_ops.kernels.wsmma import ws_mma

BLOCK = 128


def tiles(M: int, N: int, k_pad: int, sm: int) -> list[dict]:
    """The tuner's candidates (``tuning._ws_candidates``: BM = the M bucket, 16..256; the default rings and deeper
    ones) and each of them without split K."""
    out = tuning.candidates("ws", M, N, k_pad, sm, 5)
    return out + [dict(c, SPLIT_K=1) for c in out if c["SPLIT_K"] > 1 and dict(c, SPLIT_K=1) not in out]


def check(bits: int, N: int, K: int, M: int, config: dict, dtype: torch.dtype, bias: bool) -> float:
    """Relative error of the kernel against float64 on random data (K a multiple of 128)."""
    w = torch.randn(N, K, device="cuda") * 0.02
    qdata, scale = torch.ops.hlwq.quantize(w, bits, BLOCK)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, bits, BLOCK, K, torch.float64)
    x = torch.randn(M, K, device="cuda").to(dtype)
    b = torch.randn(N, device="cuda").to(dtype) if bias else None
    ref = x.double() @ w_hat.t() + (b.double() if bias else 0)
    xr = fwht(x, BLOCK, torch.bfloat16)
    out = ws_mma(xr, qdata, scale, b, bits, BLOCK, dtype, config)
    return rel_error(out, ref)


def correctness() -> bool:
    ok = True
    base = dict(QSTAGES=4, WSTAGES=2, XSTAGES=2, DEC_WARPS=4, DEC_REGS=168, num_warps=4)
    cases = [(5, 200, 384, 5, 16, 1, torch.bfloat16, False), (4, 200, 384, 37, 32, 3, torch.bfloat16, True),
             (5, 333, 1024, 130, 128, 2, torch.float16, True), (5, 128, 256, 64, 64, 1, torch.bfloat16, True),
             (4, 4096, 4096, 16, 16, 4, torch.bfloat16, False), (5, 1000, 512, 300, 128, 5, torch.bfloat16, False),
             (4, 4096, 4096, 16, 16, 1, torch.bfloat16, False), (5, 512, 2048, 64, 64, 1, torch.bfloat16, False),
             (5, 4096, 4096, 128, 128, 1, torch.bfloat16, True)]
    for bits, N, K, M, BM, split, dtype, bias in cases:
        # Eight decoding warps gave wrong results at Q4 on 4096 x 4096 here until the word slot was handed back
        # after the decode (session 16)
        for dec in ((4, 168), (8, 120)):
            cfg = dict(base, BM=BM, SPLIT_K=split, DEC_WARPS=dec[0], DEC_REGS=dec[1])
            errs = [check(bits, N, K, M, cfg, dtype, bias) for _ in range(3)]
            good = max(errs) < 1e-2  # bf16 rounding of weights and activations: ~3e-3
            ok &= good
            print(f"check q{bits} N={N} K={K} M={M} BM={BM} split={split} dec={dec[0]} {dtype} bias={bias}: "
                  f"err {' '.join(f'{e:.2e}' for e in errs)} {'ok' if good else 'WRONG'}", flush=True)
    return ok


def main() -> None:
    p = sweep_parser(__doc__, [16, 32, 64, 128, 256, 512, 2048], "diag_wsmma.json")
    p.add_argument("--skip-check", action="store_true", help="no correctness pass first")
    a = p.parse_args()
    t0 = time.time()
    ok = a.skip_check or correctness()
    print(f"correctness {'skipped' if a.skip_check else 'passed' if ok else 'FAILED'} in {time.time() - t0:.0f} s",
          flush=True)
    rows = []
    for case in sweep(a):
        N, K, bits, M, sm = case["N"], case["K"], case["bits"], case["M"], case["sm"]
        copies, x, ref, bf16_us = case["copies"], case["x"], case["ref"], case["bf16_us"]
        k_pad = copies[0][1].shape[1] * BLOCK
        xr = fwht(F.pad(x, (0, k_pad - K)), BLOCK, torch.bfloat16)
        with forced_path("dequant"):
            dq = [lambda q=q, s=s, x=x, bits=bits, K=K: kernels.linear(x, q, s, None, bits, BLOCK, K, None)
                  for q, s in copies]
            dq_us = graph_time(dq, replays=10)[0]
        results = []
        for config in tiles(M, N, k_pad, sm):
            err = rel_error(ws_mma(xr, *copies[0], None, bits, BLOCK, torch.bfloat16, config), ref)
            alone = [lambda q=q, s=s, c=config, xr=xr, bits=bits: ws_mma(xr, q, s, None, bits, BLOCK, torch.bfloat16,
                                                                         c)
                     for q, s in copies]
            rotating = [lambda q=q, s=s, c=config, x=x, pad=k_pad - K, bits=bits: ws_mma(
                fwht(F.pad(x, (0, pad)), BLOCK, torch.bfloat16), q, s, None, bits, BLOCK, torch.bfloat16, c)
                for q, s in copies]
            us, rot_us = graph_time(alone, replays=10)[0], graph_time(rotating, replays=10)[0]
            results.append(dict(config=config, us=us, with_fwht_us=rot_us, err=err))
            print(f"{'':>10} ws {config['BM']:>3}/{config['SPLIT_K']}/rings {config['QSTAGES']}-{config['WSTAGES']}-"
                  f"{config['XSTAGES']}/decoders {config.get('DEC_PARTS', 1)}x{config['DEC_WARPS']}: "
                  f"{us:7.2f} us alone, "
                  f"{rot_us:7.2f} with FWHT (x{bf16_us / rot_us:.2f} bf16), err {err:.1e}", flush=True)
        best = min(results, key=lambda r: r["with_fwht_us"])
        print(f"{'':>10} dequant+cuBLAS {dq_us:7.2f} us (x{bf16_us / dq_us:.2f}); best ws {best['with_fwht_us']:.2f} "
              f"(x{bf16_us / best['with_fwht_us']:.2f} bf16, x{case['path_us'] / best['with_fwht_us']:.2f} path)",
              flush=True)
        rows.append(case_record(case, dequant_us=dq_us, ws=results))
    save_rows(rows, a.json, ok)


if __name__ == "__main__":
    main()
