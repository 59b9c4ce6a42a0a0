"""Session 42, on the CPU with torch 2.11 (the GPU machine's) and Triton 3.6: what Inductor makes of a compiled
quantized layer with HLWQ_COMPILED_GEMV on, the CUDA-only checks patched out (traced_gemv's device test and, in the
old tree, linear_call's ``x.is_cuda``; the old tree's per-device counter buffer and table registered for the CPU).
Triton's driver is a stand-in naming sm_90, so Inductor writes its code and fails only when it compiles the kernel:
the code is taken from the output_code log. Prints which route the graph takes.

    TORCH_LOGS=output_code PYTHONPATH=<tree> python cpu_s42_compiled_route.py [NxK]
"""
import inspect, sys, traceback
import torch
import triton
from triton.backends.compiler import GPUTarget
from torchao.quantization import quantize_
from torch._inductor.utils import fresh_cache
from hlwq_ops import HLWQConfig, ops
from hlwq_ops.kernels import compiled, tuning


class _TargetOnly:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


triton.runtime.driver.set_active(_TargetOnly())
src = inspect.getsource(compiled.traced_gemv).replace('x.device.type != "cuda"', 'x.device.type != "cpu"')
exec(compile(src, compiled.__file__, "exec"), compiled.__dict__)
tuning.tuned = lambda family, M, N, k, bits, device: tuning.candidates(family, M, N, k, 132, bits)[0]
if hasattr(compiled, "_TABLES"):  # the old tree: compiled_inputs reads these
    from hlwq_ops.codebook import codebook
    from hlwq_ops.kernels import common
    common._COUNTERS[torch.device("cpu")] = torch.zeros(1 << 18, dtype=torch.int32)
    compiled._TABLES[(5, torch.device("cpu"))] = codebook(5, "cpu")
src2 = inspect.getsource(ops.linear_call).replace("and x.is_cuda\n", "\n").replace("and x.is_cuda ", "")
exec(compile(src2, ops.__file__, "exec"), ops.__dict__)
compiled.COMPILED_GEMV = True
asked = []
traced_gemv = compiled.traced_gemv
compiled.traced_gemv = lambda x, *a: (asked.append(type(x).__name__), traced_gemv(x, *a))[1]

N, K = (int(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "4100x4608").split("x"))
layer = torch.nn.Linear(K, N, bias=True, dtype=torch.bfloat16)
quantize_(layer, HLWQConfig(bits=5))
print(torch.__version__, triton.__version__, ops.__file__, f"{N}x{K}", flush=True)
torch._dynamo.reset()
try:
    with torch.no_grad(), fresh_cache():
        torch.compile(layer, fullgraph=True)(torch.randn(1, K, dtype=torch.bfloat16))
except Exception as e:
    print("stopped:", type(e).__name__, str(e).splitlines()[0][:160])
print("traced_gemv asked on:", asked)
