"""Q5 with each plane-0 word's 8 codes stored as one contiguous 40-bit stream (a layout prototype).

Same bytes at the same addresses as the library's format: a plane-0 word and
its byte of the lane's plane-1 word (byte ``q`` for the lane's word ``q``) hold
the word's 8 codes. The format puts code ``a``'s low nibble at bits ``4 a`` of
the word and its fifth bit at bit ``a`` of the byte; here code ``a`` sits at
bits ``5 a .. 5 a + 4`` of the 40 bits (word first, then the byte), so the
kernel cuts codes 0..5 out of the word with one shift each, code 6 with one
funnel shift, code 7 from the byte with one shift (``benchmarks/NOTES.md``,
session 67). The kernels are a ``diag_variants`` copy with ``code_sources`` and
``code_at``'s Q5 branch changed; the weight is repacked in torch.

    python benchmarks/diag_contig5.py --device cpu            # the interpreter: outputs equal (small shapes)
    python benchmarks/diag_contig5.py --shapes 14336x4096     # a GPU: outputs equal, then times
"""

from __future__ import annotations

import argparse
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
    codes = unpack_codes(qdata, 5, block_size).to(torch.int64)  # [N, K_pad]
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
    p.add_argument("--small-config", default='{"VEC": 16, "R": 4, "ROWS": 16, "num_warps": 4, "EARLY": true}',
                   help="the tile for shapes up to 4096 x 4096 (the tuner's Q5 pick there, RESULTS 54a)")
    a = p.parse_args()
    if a.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import diag_variants  # (after TRITON_INTERPRET: the copies read it on import)
    from hlwq_ops.format import quantize_ref

    mods = {"base": diag_variants.build("base", []), "contig5": diag_variants.build("contig5", VARIANT)}
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
        outs = {name: mod.gemv(x, weights[name], scale, None, 5, 128, None, torch.bfloat16, config, rotate=True)
                for name, mod in mods.items()}
        same = torch.equal(outs["base"], outs["contig5"])
        print(f"{shape} outputs equal: {same} (max diff {(outs['base'].float() - outs['contig5'].float()).abs().max():.3g})",
              flush=True)
        if a.device == "cpu":
            continue
        from bench_ops import graph_time, n_copies

        nbytes = qdata.nbytes + scale.nbytes
        n = n_copies(nbytes, torch.cuda.get_device_properties(0).L2_cache_size)
        times: dict[str, list[float]] = {name: [] for name in mods}
        for _ in range(a.rounds):  # alternating, so that a clock or machine drift hits both
            for name, mod in mods.items():
                copies = [weights[name]] + [weights[name].clone() for _ in range(n - 1)]
                calls = [lambda q=q, mod=mod: mod.gemv(x, q, scale, None, 5, 128, None, torch.bfloat16, config,
                                                       rotate=True) for q in copies]
                times[name].append(graph_time(calls, replays=10)[0])
        for name, ts in times.items():
            print(f"{shape} q5 {name:8s} median {statistics.median(ts):6.2f} us  rounds {[round(t, 2) for t in ts]}"
                  f"  {nbytes / statistics.median(ts) / 1e3:5.0f} GB/s  {config}", flush=True)


if __name__ == "__main__":
    main()
