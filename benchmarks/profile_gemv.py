"""Run one GEMV configuration a few times, as ``F.linear`` runs it at M = 1 (for ``ncu``).

    ncu --clock-control none --kernel-name regex:_gemv_kernel --launch-skip 3 --launch-count 1 --set full \\
        python benchmarks/profile_gemv.py 14336x4096 5 '{"VEC": 4, "R": 8, "ROWS": 64, "num_warps": 4}'

An optional fourth argument names another module with a ``gemv`` (e.g. a
previous version copied into a package) to profile instead.
"""

import importlib
import json
import sys

import torch

from hlwq_ops.format import quantize_ref

shape, bits, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
gemv = importlib.import_module(sys.argv[4] if len(sys.argv) > 4 else "hlwq_ops.kernels.gemv").gemv
N, K = (int(v) for v in shape.split("x"))
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)  # raw activations, rotated in the kernel
for _ in range(6):
    gemv(x, qdata, scale, None, bits, 128, None, torch.bfloat16, config, rotate=True)
torch.cuda.synchronize()
