"""Session 57 (NOTES 57): host time of an eager HLWQ projection on the development machine's CPU, its implementation
real, then replaced by a stub returning a preallocated output. Run: python benchmarks/results/cpu_s57_eager_host.py"""
import timeit
import warnings

import torch
import torch.nn.functional as F
from torchao.quantization import quantize_
from hlwq_ops import hlwq_q5
lin = torch.nn.Linear(128, 16, bias=False).to(torch.bfloat16)
dense_w = lin.weight.detach().clone()
quantize_(torch.nn.Sequential(lin), hlwq_q5())
w = lin.weight
x = torch.randn(1, 8, 128, dtype=torch.bfloat16)
print(type(w).__name__)
def best(f, n=2000):
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6
with torch.no_grad():
    print("dense F.linear      %.1f us" % best(lambda: F.linear(x, dense_w)))
    print("HLWQ F.linear       %.1f us" % best(lambda: F.linear(x, w)))
    print("module forward      %.1f us" % best(lambda: lin(x)))
    args = (x, w.qdata, w.scale, None, w.bits, w.block_size, w.shape[1])
    print("op linear_inference %.1f us" % best(lambda: torch.ops.hlwq.linear_inference(*args)))
    from hlwq_ops import ops
    print("_linear_cpu direct  %.1f us" % best(lambda: ops._linear_cpu(*args, None)))
warnings.simplefilter("ignore")
lib = torch.library.Library("hlwq", "IMPL")
out = torch.empty(1, 8, 16, dtype=torch.bfloat16)
def stub(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    return out
lib.impl("linear_inference", stub, "CPU")
lib.impl("linear", stub, "CPU")
with torch.no_grad():
    print("-- CPU impl stubbed")
    print("HLWQ F.linear       %.1f us" % best(lambda: F.linear(x, w)))
    print("module forward      %.1f us" % best(lambda: lin(x)))
    print("op linear_inference %.1f us" % best(lambda: torch.ops.hlwq.linear_inference(*args)))
    print("dense F.linear      %.1f us" % best(lambda: F.linear(x, dense_w)))
