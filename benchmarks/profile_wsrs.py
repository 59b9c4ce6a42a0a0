"""Run one register-operand kernel (``wsrs``) configuration a few times on rotated activations (for ``ncu``).

    ncu --clock-control none --kernel-name regex:_rs_kernel --launch-skip 3 --launch-count 1 --set full \\
        -o wsrs_m16 python benchmarks/profile_wsrs.py 14336x4096 5 16
    ncu --import wsrs_m16.ncu-rep --page source --csv --print-source sass > wsrs_m16_sass.csv

Arguments: N x K, bits, M, and optionally the config (JSON, as the tuner's; default: its first candidate).
"""

import json
import sys

import torch

from hlwq_ops.format import quantize_ref
from hlwq_ops.kernels import tuning, wsrs
from hlwq_ops.kernels.fwht import fwht

shape, bits, M = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
N, K = (int(v) for v in shape.split("x"))
sm = torch.cuda.get_device_properties(0).multi_processor_count
config = json.loads(sys.argv[4]) if len(sys.argv) > 4 else tuning.candidates("wsrs", M, N, K, sm, bits)[0]
print(config, flush=True)
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, bits, 128)
xp = fwht(torch.randn(M, K, device="cuda", dtype=torch.bfloat16), 128, torch.bfloat16, 8, wsrs.activation_span(config))
for _ in range(6):
    wsrs.ws_rs(xp, qdata, scale, None, bits, 128, torch.bfloat16, config)
torch.cuda.synchronize()
