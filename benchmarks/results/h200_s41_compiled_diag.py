# Record: written in session 41 for the first form of the compiled GEMV (compiled_inputs, removed in session 42);
# it no longer runs against the library. Session 42 found the cause on the CPU (cpu_s42_compiled_route.py).
"""Session 41: why test_inductor_launches_the_gemv fails on the H200 (torch 2.11): what the compiled code calls."""
import re, sys, traceback
import torch
from torch._inductor.utils import fresh_cache, run_and_get_code
from torchao.quantization import quantize_
from hlwq_ops import HLWQConfig, kernels, ops

kernels.compiled.COMPILED_GEMV = True
layer = torch.nn.Linear(4608, 4100, bias=False, device="cuda", dtype=torch.bfloat16)
quantize_(layer, HLWQConfig(bits=5))
x = torch.randn(1, 4608, device="cuda", dtype=torch.bfloat16)
w = layer.weight
print("compiled_inputs:", None if kernels.compiled.compiled_inputs(5, None, x.device) is None else "ok")
with torch.no_grad():
    t = kernels.compiled.traced_gemv(x, w.qdata, w.scale, None, 5, 128, 4608, None)
print("traced_gemv eager:", None if t is None else (t.plan.counters, t.plan.launch.grid))
seen = []
orig_traced = kernels.compiled.traced_gemv


def traced_spy(*args):
    out = orig_traced(*args)
    seen.append(("traced_gemv", type(args[0]).__name__, None if out is None else out.plan.counters))
    return out


kernels.compiled.traced_gemv = traced_spy
orig_inputs = kernels.compiled.compiled_inputs


def inputs_spy(*args):
    out = orig_inputs(*args)
    seen.append(("compiled_inputs", out is None))
    return out


kernels.compiled.compiled_inputs = inputs_spy
calls = []
orig = ops.linear_call
torch._dynamo.reset()
try:
    with torch.no_grad(), fresh_cache():
        y, code = run_and_get_code(torch.compile(layer, fullgraph=True), x)
    code = "\n".join(code)
    import os
    open(os.path.join(os.environ.get("OUT", "/tmp"), "compiled_code.py"), "w").write(code)
    for line in code.splitlines():
        if re.search(r"hlwq|gemv|linear_|triton_op|extern|async_compile.triton\(", line):
            print("  |", line.strip()[:200])
    print("equal to eager:", torch.equal(y, layer(x)))
    print("calls while compiling:", seen)
except Exception:
    traceback.print_exc()
