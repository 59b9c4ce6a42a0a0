"""Run one tensor-core GEMV configuration a few times on rotated bfloat16 activations (for ``ncu``).

    ncu --clock-control none --kernel-name regex:_tc_gemv_kernel --launch-skip 3 --launch-count 1 --set full \\
        python benchmarks/profile_tcgemv.py 14336x4096 5 1 '{"num_warps": 4, "KB": 2, "MG": 1, "ROWS": 112}'
"""

import json
import sys

import torch

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels.tcgemv import tc_gemv

shape, bits, M, config = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
N, K = (int(v) for v in shape.split("x"))
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
xr = torch.randn(M, scale.shape[1] * 128, device="cuda", dtype=torch.bfloat16)
for _ in range(6):
    tc_gemv(xr, qdata, scale, None, bits, 128, None, torch.bfloat16, config)
torch.cuda.synchronize()
