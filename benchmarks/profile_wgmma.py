"""Run one tensor-core (wgmma) configuration a few times, as ``F.linear`` runs it at 3 <= M <= 64 (for ``ncu``).

    ncu --clock-control none --kernel-name regex:_wgmma_kernel --launch-skip 3 --launch-count 1 --set full \\
        python benchmarks/profile_wgmma.py 14336x4096 5 8 \\
        '{"BM": 16, "BN": 64, "SPLIT_K": 4, "num_warps": 4, "num_stages": 3}'

Arguments: N x K, bits, M, and the launch config (JSON, as the tuner's).
"""

import json
import sys

import torch

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels.fwht import fwht
from hlwq_ops.kernels.wgmma import wgmma

shape, bits, M, config = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
N, K = (int(v) for v in shape.split("x"))
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
xp = fwht(torch.randn(M, K, device="cuda", dtype=torch.bfloat16), 128, torch.bfloat16, per_word=8)
for _ in range(6):
    wgmma(xp, qdata, scale, None, bits, 128, torch.bfloat16, config)
torch.cuda.synchronize()
