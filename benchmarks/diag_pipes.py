"""Throughput of the instructions a LUT decode is made of, per SM and clock: warp shuffles, shared-memory loads,
PRMT and LOP3 against FFMA (whose 128 lanes per clock per SM calibrate the clock).

Each thread runs 8 independent chains of one instruction (inline PTX, so nothing is folded) over many
iterations, on 8 programs of 4 warps per SM; the rate is lane-instructions per ns per SM, and per clock
once divided by FFMA's rate / 128::

    python benchmarks/diag_pipes.py
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

OPS = {
    "ffma": "fma.rn.f32 {d}, {a}, {a}, {a};",
    "shfl": "shfl.sync.idx.b32 {d}, {a}, {a}, 0x1f, 0xffffffff;",
    "prmt": "prmt.b32 {d}, {a}, {a}, 0x3012;",
    "lop3": "lop3.b32 {d}, {a}, {a}, 0x5a5a5a5a, 0x96;",
    # a 32-bit shared load, lane l from bank l (conflict-free): the chain's value stays l * 4 mod 128
    "lds": "{{ .reg .u32 t; and.b32 t, {a}, 0x7C; add.u32 t, t, base; ld.shared.b32 {d}, [t]; }}",  # + 1 STS / 8
}


def _asm(op: str) -> str:
    text = OPS[op]
    body = " ".join(text.format(d=f"${i}", a=f"${i + 8}") for i in range(8))
    if op == "lds":
        # each iteration first writes word l = 4 l (its lane's own bank), so the chains stay conflict-free
        body = ("{ .shared .align 16 .b8 tab[4096]; .reg .u32 base, w; mov.u32 base, tab; add.u32 w, base, $16; "
                "st.shared.b32 [w], $16; " + body + " }")
    return body


@triton.jit
def _pipe_kernel(out_ptr, ITERS: tl.constexpr, ASM: tl.constexpr):
    v = (tl.arange(0, 128) % 32) * 4  # (32-bit registers whatever the instruction's type: floats run on these bits)
    r = (v, v + 1, v + 2, v + 3, v + 4, v + 5, v + 6, v + 7)
    for _ in range(ITERS):
        r = tl.inline_asm_elementwise(ASM, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r,r,r",
                                      [r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], v],
                                      dtype=(tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32,
                                             tl.int32), is_pure=True, pack=1)
    s = r[0] + r[1] + r[2] + r[3] + r[4] + r[5] + r[6] + r[7]
    tl.store(out_ptr + tl.program_id(0) * 128 + tl.arange(0, 128), s)


def rate(op: str, iters: int = 4096) -> float:
    """Lane-instructions per ns per SM."""
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    programs = 8 * sm
    out = torch.empty(programs * 128, device="cuda", dtype=torch.int32)

    def run():
        _pipe_kernel[(programs,)](out, ITERS=iters, ASM=_asm(op), num_warps=4)

    run()
    ms = triton.testing.do_bench(run, warmup=5, rep=50)
    return programs * 128 * 8 * iters / (ms * 1e6) / sm


def main() -> None:
    print(torch.cuda.get_device_name(0), triton.__version__)
    rates = {op: rate(op) for op in OPS}
    clock = rates["ffma"] / 128
    print(f"FFMA-derived SM clock: {clock:.3f} GHz")
    for op, r in rates.items():
        print(f"{op:5s} {r:8.1f} lane-ops/ns/SM = {r / clock:6.1f} lanes/clock/SM "
              f"({r / clock / 32:.2f} warp instr/clock)")


if __name__ == "__main__":
    main()
