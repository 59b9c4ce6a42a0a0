"""Session 37: is HLWQ Q5 deterministic call to call on the GPU? generate() differed between two calls at token 24
(run 2; bf16 did not). Per op: F.linear on an HLWQTensor, the same x five times, other shapes' calls in between;
then the 8B-shaped model's eager forward of one 128-token prompt, twice, logits compared bit for bit."""
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402

from hlwq_ops import HLWQTensor  # noqa: E402

torch.manual_seed(0)
shapes = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)]
ws = {s: HLWQTensor.from_hp(torch.randn(*s, device="cuda", dtype=torch.bfloat16) * 0.02) for s in shapes}
with torch.no_grad():
    for M in (1, 2, 8, 16, 64, 128, 512):
        xs = {s: torch.randn(M, s[1], device="cuda", dtype=torch.bfloat16) for s in shapes}
        first = {s: F.linear(xs[s], ws[s]).clone() for s in shapes}
        bad = []
        for rep in range(5):
            for s in shapes:
                y = F.linear(xs[s], ws[s])
                if not torch.equal(y, first[s]):
                    bad.append((s, rep, (y != first[s]).sum().item(), (y.float() - first[s].float()).abs().max().item()))
        print(f"M={M}: {'deterministic' if not bad else bad}", flush=True)

    model, _ = B.build("llama3-8b", "hlwq-q5")
    ids = torch.randint(0, 1000, (1, B.PROMPT), device="cuda")
    outs = [model(ids).logits.clone() for _ in range(3)]
    for i in (1, 2):
        d = (outs[i] != outs[0])
        print(f"8B eager forward {i} vs 0: {'same' if not d.any() else f'{d.sum().item()} logits differ, max abs {(outs[i] - outs[0]).abs().max().item():.3g}'}", flush=True)
