"""Compile the GEMV (or ``--wsrs``, the register-operand ws kernel) for sm_90 without a GPU and count its main loop's
SASS instructions.

``triton.compile`` on the kernel's source with the argument specializations
a real call gets (M == 1 a constant, pointers, sizes and strides divisible by
16; ROWS, rows per program, any number -- without them Triton drops the 16-byte vectors and picks another layout),
then ``cuobjdump`` for the registers and ``nvdisasm`` for the SASS; the loop
is the backward branch whose body holds the most FFMAs. Needs only the CPU, torch and the
Triton of the GPU machine (its wheel ships ptxas, cuobjdump and nvdisasm)::

    python benchmarks/offline_sass.py --bits 5 --vec 16 --r 4 --warp-parts 4
    python benchmarks/offline_sass.py --bits 5 --vec 4 --r 8 --split
    python benchmarks/offline_sass.py --wsrs 16x14336x4096

With ``--wsrs MxNxK`` the kernel is :mod:`hlwq_ops.kernels.wsrs`'s with the tuner's first config for that shape
(with a bias unless ``--no-bias``, PDL on, as ``tests/test_kernels.py`` compiles it): the whole kernel's counts and
the length of each consumer warpgroup's step loop (:func:`step_loops`).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's hlwq_ops
import hlwq_ops  # noqa: E402
from hlwq_ops.kernels.common import planes  # noqa: E402
from hlwq_ops.kernels.gemv import _gemv_kernel  # noqa: E402

TYPES = dict(x_ptr="*bf16", q_ptr="*i32", s_ptr="*fp16", c_ptr="*fp32", bias_ptr="*bf16", out_ptr="*bf16",
             ws_ptr="*fp32", count_ptr="*i32", N="i32", K_PAD="i32", K_X="i32", ROWS="i32", stride_xm="i32", M="i32",
             stride_qn="i32", stride_sn="i32", END0="i32", END1="i32", r_ptr="*bf16", nw_ptr="*bf16", h_ptr="*bf16",
             stride_rm="i32",
             **{f"{name}{i}_ptr": kind for i in (1, 2) for name, kind in
                (("q", "*i32"), ("s", "*fp16"), ("c", "*fp32"), ("bias", "*bf16"))})


def compile_gemv(bits: int, vec: int, r: int, warp_parts: int, split: bool, mb: int = 1, sm: int = 90,
                 early: bool = False, pdl: bool = False, plain_stores: bool = False, group: int = 1, glu: bool = False,
                 norm: int = 0):
    consts = dict(BITS=bits, B=128, HAS_BIAS=False, WORKSPACE=split or warp_parts > 1, SPLIT=split, ROTATE=True,
                  GLU=glu, ADD_NORM=norm, EPS=1e-5, WIDE=False, INTERPRET=False, R=r, VEC=vec, WARP_PARTS=warp_parts,
                  MB=mb, EARLY=early, PDL=pdl, PLAIN_STORES=plain_stores, GROUP=group, **planes(bits))
    if mb == 1:
        consts["M"] = 1  # a real call at M = 1 has it specialized
    names = _gemv_kernel.arg_names
    # (Inductor's launch passes the uint8 codes, for the unused group weights too)
    types = dict(TYPES, q_ptr="*u8", q1_ptr="*u8", q2_ptr="*u8") if plain_stores else TYPES
    signature = {n: "constexpr" if n in consts else types[n] for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in types
             if n not in ("ROWS", "M") and n in names}
    src = ASTSource(_gemv_kernel, signature, consts, attrs)
    return triton.compile(src, target=GPUTarget("cuda", sm, 32), options=dict(num_warps=4, num_stages=1))


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def compile_wsrs(bits: int, M: int, N: int, K: int, bias: bool = True):
    """The register-operand ws kernel for (M, N, K) with the tuner's first config, compiled for sm_90."""
    import torch
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.runtime.jit import mangle_type

    from hlwq_ops.kernels import tuning, wsmma, wsrs

    config = tuning.candidates("wsrs", M, N, K, 132, bits)[0]
    xp = torch.empty(M, K, dtype=torch.bfloat16)
    q = torch.empty(N, K * bits // 8, dtype=torch.uint8)
    _, p0_l, p1_l = wsmma._layouts(64, torch.bfloat16)
    descs = dict(x_desc=TensorDescriptor.from_tensor(xp, [config["BM"], config["XBOX"]],
                                                     wsrs._x_layout(config["BM"], config["XBOX"], xp.dtype)),
                 p0_desc=TensorDescriptor.from_tensor(q.view(torch.int32), [128, 16], p0_l),
                 p1_desc=TensorDescriptor.from_tensor(q.view(torch.int8), [128, 16], p1_l))
    consts = dict(BITS=bits, BM=config["BM"], QSTAGES=config["QSTAGES"], XSTAGES=config["XSTAGES"],
                  XBOX=config["XBOX"], NORM_ACC=config.get("NORM_ACC", True), REGS=config["REGS"], HAS_BIAS=bias,
                  SPLIT=config["SPLIT_K"] > 1, PDL=True, PHASES=config.get("PHASES", 1), num_warps=4)
    args = dict(s_ptr="*fp16", c_ptr="*fp32", bias_ptr="*bf16", out_ptr="*bf16", ws_ptr="*fp32", M="i32", N="i32",
                K_PAD="i32", stride_sn="i32")
    signature = {name: mangle_type(d) for name, d in descs.items()} | args | dict.fromkeys(consts, "constexpr")
    source = GluonASTSource(wsrs._rs_kernel, signature, consts)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4)), config


def _instructions(sass: str) -> tuple[list[tuple[int, str, str]], list[tuple[int, int]]]:
    """The SASS instructions (address, opcode, operands) and the loops (first and last address of each backward
    branch's body)."""
    ins, labels, pending = [], {}, []
    for line in sass.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line.strip())
        if label:
            pending.append(label.group(1))
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,5})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)(.*?);", line)
        if m:
            addr = int(m.group(1), 16)
            labels.update({p: addr for p in pending})
            pending = []
            ins.append((addr, m.group(3), m.group(4)))
    loops = [(labels[t.group(1)], addr) for addr, op, rest in ins if op.startswith("BRA")
             for t in [re.search(r"(\.L_x_\d+)", rest)] if t and labels.get(t.group(1), addr) < addr]
    return ins, loops


def _mix(ins, lo: int = 0, hi: int = 1 << 62) -> collections.Counter:
    return collections.Counter(op.split(".")[0] for addr, op, _ in ins if lo <= addr <= hi)


def loop_mix(sass: str, key_op: str | None = "FFMA") -> collections.Counter:
    """Opcode counts of the main loop's body: the backward branch whose body holds the most ``key_op`` (None: of the
    whole kernel)."""
    ins, loops = _instructions(sass)
    if key_op is None:
        return _mix(ins)
    return _mix(ins, *_main_loop(ins, loops, key_op))


def _main_loop(ins, loops, key_op: str = "FFMA") -> tuple[int, int]:
    """First and last address of the main loop: the backward branch whose body holds the most ``key_op`` (the
    epilogue's loops hold no FFMA); an empty range if the kernel has no loop."""
    return max(loops, key=lambda lo_hi: _mix(ins, *lo_hi)[key_op], default=(0, -1))


def shuffle_distances(sass: str) -> list[int]:
    """For each FFMA of the main loop that reads a codebook shuffle's result directly, how many instructions after
    that ``SHFL.IDX`` it sits (the nearest, if it reads several; in the loop's SASS order, one pass, registers traced
    to their last writer, only a write's first register recorded). With ~2 warps a scheduler nothing hides a
    shuffle's latency but the instructions between: ncu put Q4's FFMAs, 6 after their shuffle (Q5's 12), on the
    short scoreboard 2.7x as often (``benchmarks/RESULTS.md`` 53c)."""
    ins, loops = _instructions(sass)
    lo, hi = _main_loop(ins, loops)
    body = [(op, rest) for addr, op, rest in ins if lo <= addr <= hi]
    written, out = {}, []
    for i, (op, rest) in enumerate(body):
        operands = [o.strip() for o in rest.split(",")]
        first = 1 if operands and re.fullmatch(r"!?U?P(T|\d)", operands[0]) else 0  # a predicate destination first
        dst = re.findall(r"\bR(\d+)\b", operands[first]) if len(operands) > first else []
        srcs = [reg for o in operands[first + 1:] for reg in re.findall(r"\bR(\d+)\b", o)]
        if op.startswith("FFMA"):
            after = [i - written[reg][0] for reg in srcs if written.get(reg, (0, ""))[1].startswith("SHFL.IDX")]
            if after:
                out.append(min(after))
        if dst:
            written[dst[0]] = (i, op)
    return out


def shuffle_lookups(sass: str) -> int:
    """``SHFL.IDX`` instructions (codebook lookups, not the row sums' butterflies) in the main loop."""
    ins, loops = _instructions(sass)
    lo, hi = _main_loop(ins, loops)
    return sum(op.startswith("SHFL.IDX") for addr, op, _ in ins if lo <= addr <= hi)


def step_loops(sass: str) -> list[int]:
    """Instruction counts of the ws kernel's consumer step loops: the loops whose body holds exactly one step of one
    warpgroup (eight ``wgmma``, 64 shuffles: 64 rows x 128 codes over 128 threads), smallest first."""
    ins, loops = _instructions(sass)
    mixes = [_mix(ins, *lo_hi) for lo_hi in loops]
    return sorted(sum(m.values()) for m in mixes if m["HGMMA"] == 8 and m["SHFL"] == 64)


def _inspect(kernel) -> tuple[str, str]:
    """The kernel's SASS (nvdisasm) and its registers and stack (cuobjdump)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True).stdout
    return sass, " ".join(re.findall(r"REG:[0-9]+|STACK:[0-9]+", usage))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--vec", type=int, default=4)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--warp-parts", type=int, default=1)
    p.add_argument("--split", action="store_true", help="K needs several slices (split-K counters)")
    p.add_argument("--mb", type=int, default=1, help="activation rows per program (MB; M is then a runtime value)")
    p.add_argument("--early", action="store_true", help="the next rows' loads at the top of the loop (EARLY)")
    p.add_argument("--pdl", action="store_true", help="programmatic dependent launch (prefetch, wait, release)")
    p.add_argument("--plain-stores", action="store_true",
                   help="the kernel Inductor launches (hlwq.linear_compiled): tl.store row sums, uint8 codes")
    p.add_argument("--group", type=int, default=1, help="weights sharing the activations (GROUP: 1 to 3)")
    p.add_argument("--glu", action="store_true", help="silu(gate) * up of the rows' two halves in the prologue (GLU)")
    p.add_argument("--norm", type=int, default=0, choices=(0, 1, 2),
                   help="the rows plus residual rows, RMSNorm'd, in the prologue (ADD_NORM; a group's, --group 2 "
                        "or 3): 1 Llama's form, 2 Qwen3.5's (1 + weight)")
    p.add_argument("--wsrs", metavar="MxNxK", help="the register-operand ws kernel for this shape instead")
    p.add_argument("--no-bias", action="store_true", help="(--wsrs) the kernel without a bias")
    a = p.parse_args()
    if a.wsrs:
        M, N, K = map(int, a.wsrs.split("x"))
        kernel, config = compile_wsrs(a.bits, M, N, K, bias=not a.no_bias)
        sass, resources = _inspect(kernel)
        mix = loop_mix(sass, None)
        print(f"Triton {triton.__version__}, sm_90, wsrs Q{a.bits} {a.wsrs} {config} "
              f"bias={not a.no_bias}: {resources}")
        print(f"whole kernel: {sum(mix.values())} instructions, SHFL {mix['SHFL']}, STL {mix['STL']}; consumer step "
              f"loops (64 codes a thread): {step_loops(sass)} instructions")
        print(" ".join(f"{op}:{c}" for op, c in mix.most_common(16)))
        return
    kernel = compile_gemv(a.bits, a.vec, a.r, a.warp_parts, a.split, a.mb, early=a.early, pdl=a.pdl,
                          plain_stores=a.plain_stores, group=a.group, glu=a.glu, norm=a.norm)
    sass, resources = _inspect(kernel)
    mix = loop_mix(sass)
    words = a.r * 32 * a.vec // 128  # plane-0 words per thread per iteration (4 warps)
    n = sum(mix.values())
    print(f"{hlwq_ops.__file__}, Triton {triton.__version__}, sm_90, Q{a.bits} VEC={a.vec} R={a.r} "
          f"WARP_PARTS={a.warp_parts} split={a.split} MB={a.mb} EARLY={a.early} PDL={a.pdl} "
          f"plain stores={a.plain_stores} GROUP={a.group} GLU={a.glu} ADD_NORM={a.norm}: {resources}")
    print(f"loop: {n} instructions, {n / (words * 32 // planes(a.bits)['W0']):.2f} per weight, "
          f"BAR {mix['BAR']}, STS {mix['STS']}, LDS {mix['LDS']}, SHFL {mix['SHFL']}")
    print(" ".join(f"{op}:{c}" for op, c in mix.most_common(16)))
    distances = sorted(shuffle_distances(sass))
    if distances:
        # as many as the loop's shuffles that feed FMAs, or some were fed across the loop's edge (not counted)
        print(f"FFMAs fed by a codebook shuffle: {len(distances)} (SHFL.IDX in the loop: {shuffle_lookups(sass)}), "
              f"median {distances[len(distances) // 2]} instructions after it (the upper median), "
              f"{sum(d <= 6 for d in distances)} within 6")


if __name__ == "__main__":
    main()
