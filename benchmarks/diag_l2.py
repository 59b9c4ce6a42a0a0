"""How fast the SMs pull activations out of the L2 as the register-operand ws kernel reads them, with nothing else.

Every program reads one ``[BM, 128]`` block of the (L2-resident: the same tensor every call) activations a step as
two ``[BM, 64]`` TMA boxes, as ``wsrs``'s activation loader does, and only sums them (to keep the loads); programs and
steps as ``wsrs`` at M = 128..2048 on Llama-3-8B's 14336 x 4096 (112 tiles of weight rows, 32 steps) and 4096 x 14336
(32 tiles, split K 4 or 2). ``NS`` is how many steps' loads are in flight (``tl.range``'s stages)::

    python benchmarks/diag_l2.py
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from bench_ops import graph_time
from triton.tools.tensor_descriptor import TensorDescriptor

# (M, BM, K, programs along N x split, split) as wsrs runs them
CASES = [(256, 256, 4096, 112, 1), (256, 256, 14336, 128, 4), (512, 256, 4096, 112, 1), (512, 256, 14336, 64, 2),
         (256, 128, 4096, 112, 1), (128, 128, 4096, 112, 1), (2048, 256, 4096, 112, 1)]


@triton.jit
def _reader(x_desc, out_ptr, STEPS, SPLIT, BM: tl.constexpr, NS: tl.constexpr):
    pid = tl.program_id(0)
    m0 = tl.program_id(1) * BM
    k0 = (pid % SPLIT) * STEPS
    acc = tl.zeros([BM, 64], tl.float32)
    for i in tl.range(0, STEPS, num_stages=NS):
        a = x_desc.load([m0, (k0 + i) * 128])
        b = x_desc.load([m0, (k0 + i) * 128 + 64])
        acc += a.to(tl.float32) + b.to(tl.float32)
    tl.store(out_ptr + pid * tl.num_programs(1) + tl.program_id(1), tl.sum(acc))


def main() -> None:
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, torch {torch.__version__}, triton {triton.__version__}", flush=True)
    for M, BM, K, programs, split in CASES:
        steps = K // 128 // split
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(programs * (M // BM), device="cuda")
        desc = TensorDescriptor.from_tensor(x, [BM, 64])
        for ns in (2, 3):
            grid = (programs, M // BM)
            call = functools.partial(_reader[grid], desc, out, steps, split, BM=BM, NS=ns, num_warps=8)
            us = graph_time([call] * 20, replays=10)[0]
            moved = programs * (M // BM) * steps * BM * 128 * 2
            print(f"M {M} BM {BM} K {K} programs {programs}x{M // BM} steps {steps} NS {ns}: {us:.2f} us, "
                  f"{moved / 1e6:.0f} MB from the L2, {moved / us / 1e6:.2f} TB/s", flush=True)


if __name__ == "__main__":
    main()
