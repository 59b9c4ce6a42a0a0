"""Q5 with each plane-0 word's 8 codes stored as one contiguous 40-bit stream (a layout prototype).

This is session 40's "element-dense" arrangement (timed on an H200 in session 42, ``benchmarks/RESULTS.md`` 42a,
and removed; its diagnostic, ``results/h200_s42_diag_dense5.py``, ran against kernel flags since removed), rebuilt
on today's kernels in session 67 and timed on an H100 (RESULTS 67a).

Same bytes at the same addresses as the library's format: a plane-0 word and
its byte of the lane's plane-1 word (byte ``q`` for the lane's word ``q``) hold
the word's 8 codes. The format puts code ``a``'s low nibble at bits ``4 a`` of
the word and its fifth bit at bit ``a`` of the byte; here code ``a`` sits at
bits ``5 a .. 5 a + 4`` of the 40 bits (word first, then the byte), so the
kernel cuts codes 0..5 out of the word with one shift each, code 6 with one
funnel shift, code 7 from the byte with one shift (``benchmarks/NOTES.md``,
session 67). The kernels are a ``diag_variants`` copy with ``code_sources`` and
``code_at``'s Q5 branch changed; the weight is repacked in torch. Only the
copy's GEMV and tensor-core GEMV read the repacked weight right: its
``wgmma.py`` and the Gluon kernels keep the format's own Q5 merge. The scales
are shared by a shape's weight copies (so they stay in the L2 for both
kernels, as they would not in ``bench_ops.py``), and each round times the
library's kernels first.

    python benchmarks/diag_contig5.py --device cpu            # the interpreter: outputs equal (small shapes)
    python benchmarks/diag_contig5.py --shapes 14336x4096     # a GPU: outputs equal, then times
    python benchmarks/diag_contig5.py --tc-m 4 8              # the tensor-core GEMV (same extraction) too

The tensor-core GEMV (:mod:`hlwq_ops.kernels.tcgemv`) cuts its codes with the
same two functions, so ``--tc-m`` compares it as well, with the tuner's first
candidate tile, on pre-rotated activations.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics

import torch

VARIANT = [
    ("decode.py",
     "        even = _nibbles_over(w0, (w1 & 0x55) * 0x410410, INTERPRET)  # bit 2j to bit 8j + 4\n"
     "        odd = _nibbles_over(w0 >> 4, (w1 & 0xAA) * 0x208208, INTERPRET)  # bit 2j + 1 to bit 8j + 4\n"
     "        return even, odd, w0\n",
     "        return w0, w1, w0  # the word, and its byte of plane 1 (already shifted down)\n"),
    ("decode.py",
     "        t = s0 if a % 2 == 0 else s1\n"
     "        t = t >> (8 * (a // 2)) if a >= 2 else t\n",
     "        if a < 6:\n"
     "            t = s0 >> (5 * a) if a > 0 else s0\n"
     "        elif a == 6:\n"
     "            t = (s0 >> 30) | (s1 << 2)\n"
     "        else:\n"
     "            t = s1 >> 3\n"),
]


def repack(qdata: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """A Q5 weight's packed codes in the prototype's layout (same shape, bytes and word positions)."""
    from hlwq_ops.format import unpack_codes

    N = qdata.shape[0]
    codes = unpack_codes(qdata, 5, block_size).to(torch.int64)  # [N, blocks, B]
    words = codes.view(N, -1, block_size // 8, 8)  # [N, blocks, plane-0 words, codes]
    stream = (words << (5 * torch.arange(8, device=codes.device))).sum(-1)  # 40 bits a word
    low = stream & 0xFFFFFFFF
    high = (stream >> 32).view(N, -1, block_size // 32, 4)  # each lane's four bytes
    plane1 = (high << (8 * torch.arange(4, device=codes.device))).sum(-1)
    block = torch.cat([low, plane1], dim=-1)  # 16 + 4 words a block of 128
    block = torch.where(block >= 2**31, block - 2**32, block).to(torch.int32)
    return block.reshape(N, -1).contiguous().view(torch.uint8).reshape(qdata.shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="*", default=["14336x4096", "4096x14336", "4096x4096"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config", default='{"VEC": 4, "R": 8, "ROWS": 64, "num_warps": 4}')
    p.add_argument("--tc-m", nargs="*", type=int, default=[], help="also the tensor-core GEMV at these M")
    p.add_argument("--small-config", default='{"VEC": 16, "R": 4, "ROWS": 16, "num_warps": 4, "EARLY": true}',
                   help="the tile for shapes up to 4096 x 4096 (the tuner's Q5 pick on 4096 x 4096, RESULTS 54a; "
                   "1024 x 4096's has ROWS 4)")
    a = p.parse_args()
    if a.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import diag_variants  # (after TRITON_INTERPRET: the copies read it on import)

    from hlwq_ops.format import quantize_ref
    from hlwq_ops.kernels import tuning

    mods = {"base": diag_variants.build("base", []), "contig5": diag_variants.build("contig5", VARIANT)}
    tcmods = {name: importlib.import_module(f"{name}.kernels.tcgemv") for name in mods}
    sms = torch.cuda.get_device_properties(0).multi_processor_count if a.device == "cuda" else 132
    torch.manual_seed(0)
    for shape in a.shapes:
        N, K = (int(v) for v in shape.split("x"))
        config = json.loads(a.config if N * K > 4096 * 4096 else a.small_config)
        if a.device == "cpu":
            config["ROWS"] = 16
        w = torch.randn(N, K, device=a.device) * 0.02
        x = torch.randn(1, K, device=a.device, dtype=torch.bfloat16)
        qdata, scale = quantize_ref(w, 5, 128)
        weights = {"base": qdata, "contig5": repack(qdata)}
        gemv = {name: (lambda q, mod=mod, config=config: mod.gemv(x, q, scale, None, 5, 128, None, torch.bfloat16,
                                                                   config, rotate=True)) for name, mod in mods.items()}
        compare(f"{shape} gemv", gemv, weights, scale, a, config)
        for M in a.tc_m:
            tc_config = {k: v for k, v in tuning._tc_candidates(N, K, sms)[0].items() if k != "kernel"}
            xr = torch.randn(M, K, device=a.device, dtype=torch.bfloat16)
            tc = {name: (lambda q, mod=mod, xr=xr, c=tc_config: mod.tc_gemv(xr, q, scale, None, 5, 128, None,
                                                                            torch.bfloat16, c))
                  for name, mod in tcmods.items()}
            compare(f"{shape} tc M={M}", tc, weights, scale, a, tc_config)


def compare(label, fns, weights, scale, a, config) -> None:
    """Outputs of each variant on its own weight, then (on a GPU) each timed over copies past the L2, alternating."""
    outs = {name: fn(weights[name]) for name, fn in fns.items()}
    diff = (outs["base"].float() - outs["contig5"].float()).abs().max()
    print(f"{label} outputs equal: {torch.equal(outs['base'], outs['contig5'])} (max diff {diff:.3g})", flush=True)
    if a.device == "cpu":
        return
    from bench_ops import graph_time, n_copies

    nbytes = weights["base"].nbytes + scale.nbytes
    n = n_copies(nbytes, torch.cuda.get_device_properties(0).L2_cache_size)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(a.rounds):  # alternating, so that a clock or machine drift hits both
        for name, fn in fns.items():
            copies = [weights[name]] + [weights[name].clone() for _ in range(n - 1)]
            times[name].append(graph_time([lambda q=q, fn=fn: fn(q) for q in copies], replays=10)[0])
    for name, ts in times.items():
        print(f"{label} q5 {name:8s} median {statistics.median(ts):6.2f} us  rounds {[round(t, 2) for t in ts]}"
              f"  {nbytes / statistics.median(ts) / 1e3:5.0f} GB/s  {config}", flush=True)


if __name__ == "__main__":
    main()
