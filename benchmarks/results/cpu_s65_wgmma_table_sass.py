"""Session 65 (NOTES 65): the wgmma kernel's step loop, compiled for sm_90 without a GPU, with each way of giving
every lane its codebook entry: the shipped load from a table whose address is in the PTX (``load``, a dummy address
here), the 32 entries as immediates picked by the lane id (``immediates``), and a table declared inside the asm block
with an initializer (``global``, ``const``; session 6's two). Prints the loop's instruction count, registers and the
loads. Needs only the CPU and the GPU machine's Triton (3.6: its wheel ships ptxas and nvdisasm), from the root::

    PYTHONPATH=<triton 3.6 site> python benchmarks/results/cpu_s65_wgmma_table_sass.py
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]
import offline_sass  # noqa: E402

from hlwq_ops.codebook import codebook  # noqa: E402

wgmma = importlib.import_module("hlwq_ops.kernels.wgmma")  # (hlwq_ops.kernels.wgmma is also a function's name)


def entries(bits: int, dtype: torch.dtype) -> list[int]:
    """The 16-bit patterns of ``c[lane % 2**bits]``, lanes 0..31."""
    c = codebook(bits, torch.device("cpu")).to(dtype).view(torch.int16)
    return [int(c[i % (1 << bits)]) & 0xFFFF for i in range(32)]


def load_asm(bits: int, dtype: torch.dtype) -> str:
    return ("{ .reg .u32 l; .reg .u64 a; mov.u32 l, %laneid; mul.wide.u32 a, l, 2; "
            "add.u64 a, a, 140000000000000; ld.global.nc.u16 $0, [a]; }")


def immediates_asm(bits: int, dtype: torch.dtype) -> str:
    """Eight ``prmt`` pick entry ``lane % 4`` of each group of four, three levels of ``selp`` the group."""
    e = entries(bits, dtype)
    words = [e[2 * i] | (e[2 * i + 1] << 16) for i in range(16)]
    s = ["{ .reg .u32 l, j, sel, t<8>, u<4>, v<2>; .reg .pred b2, b3, b4;",
         "mov.u32 l, %laneid;", "and.b32 j, l, 3;", "mad.lo.u32 sel, j, 34, 16;"]
    s += [f"prmt.b32 t{p}, {words[2 * p]}, {words[2 * p + 1]}, sel;" for p in range(8)]
    s += [f"and.b32 j, l, {bit}; setp.ne.u32 b{k}, j, 0;" for k, bit in ((2, 4), (3, 8), (4, 16))]
    s += [f"selp.b32 u{i}, t{2 * i + 1}, t{2 * i}, b2;" for i in range(4)]
    s += [f"selp.b32 v{i}, u{2 * i + 1}, u{2 * i}, b3;" for i in range(2)]
    s += ["selp.b32 t0, v1, v0, b4;", "and.b32 $0, t0, 0xFFFF; }"]
    return " ".join(s)


def declared_asm(space: str):
    def asm(bits: int, dtype: torch.dtype) -> str:
        init = ", ".join(str(v) for v in entries(bits, dtype))
        return (f"{{ .{space} .align 4 .b16 hlwq_tbl[32] = {{{init}}}; .reg .u32 l; .reg .u64 a; "
                f"mov.u32 l, %laneid; mov.u64 a, hlwq_tbl; mad.wide.u32 a, l, 2, a; ld.{space}.u16 $0, [a]; }}")
    return asm


WAYS = {"load": load_asm, "immediates": immediates_asm, "global": declared_asm("global"),
        "const": declared_asm("const")}
TYPES = dict(x_ptr="*bf16", q_ptr="*i32", s_ptr="*fp16", c_ptr="*fp32", bias_ptr="*bf16", out_ptr="*bf16",
             ws_ptr="*fp32", count_ptr="*i32", M="i32", N="i32", K_PAD="i32", stride_qn="i32", stride_sn="i32")


def compile_wgmma(asm: str, bits: int, BM: int, BN: int, one_dot: bool, num_warps: int):
    """``_wgmma_kernel`` with split K and PDL, specialized as a real call is (sizes and strides divisible by 16)."""
    consts = dict(BITS=bits, B=128, CODEBOOK_ASM=asm, HAS_BIAS=False, SPLIT=True, INTERPRET=False, BM=BM, BN=BN,
                  ONE_DOT=one_dot, PDL=True)
    names = wgmma._wgmma_kernel.arg_names
    signature = {n: "constexpr" if n in consts else TYPES[n] for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in TYPES if n != "M"}
    source = ASTSource(wgmma._wgmma_kernel, signature, consts, attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=3))


def main() -> None:
    print(f"Triton {triton.__version__}, sm_90, bfloat16 activations, split K, PDL")
    for bits in (5, 4):
        for BM, BN, one_dot, num_warps in ((16, 64, True, 4), (64, 64, False, 4), (16, 128, True, 8)):
            for way, make in WAYS.items():
                sass, resources = offline_sass._inspect(compile_wgmma(make(bits, torch.bfloat16), bits, BM, BN,
                                                                      one_dot, num_warps))
                ins, loops = offline_sass._instructions(sass)
                mix = offline_sass._mix(ins, *offline_sass._main_loop(ins, loops, "HGMMA"))
                print(f"Q{bits} BM={BM} BN={BN} one_dot={one_dot} warps={num_warps} {way:10s} {resources}: loop "
                      f"{sum(mix.values())} (LDG {mix['LDG']}, LDC {mix['LDC']}, PRMT {mix['PRMT']}, SEL {mix['SEL']})",
                      flush=True)


if __name__ == "__main__":
    main()
