"""Run one GEMV configuration a few times (for ``ncu``).

    ncu --kernel-name regex:_gemv_kernel --launch-skip 3 --launch-count 1 \\
        --section SpeedOfLight --section WarpStateStats python benchmarks/profile_gemv.py 14336x4096 5 '{"VEC": 4, "R": 4, "ROWS": 64, "num_warps": 4}'
"""

import json
import sys

import torch

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels.gemv import gemv

shape, bits, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
N, K = (int(v) for v in shape.split("x"))
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
xr = torch.randn(1, K, device="cuda")
for _ in range(6):
    gemv(xr, qdata, scale, None, bits, 128, None, torch.bfloat16, config)
torch.cuda.synchronize()
