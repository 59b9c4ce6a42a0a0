"""Session 43, on the CPU with torch 2.11 (the GPU machine's) and Triton 3.6: where compiling a model with
HLWQ_COMPILED_GEMV on spends its time before any kernel is compiled. Session 42's stand-in
(``cpu_s42_compiled_route.py``: the CUDA-only checks patched out, Triton's driver naming sm_90, so Inductor writes
its code and fails only when it compiles the kernel), on LAYERS quantized NxK layers in a row, under cProfile:
how often torch's mutation analysis of a user Triton kernel (``identify_mutated_tensors``, which makes the kernel's
TTIR each time) runs, and its time.

    PYTHONPATH=<tree> python cpu_s43_compile_profile.py [NxK] [LAYERS]
"""
import cProfile
import inspect
import pstats
import sys
import time
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
compiled._launches_on = lambda device: True
tuning.tuned = lambda family, M, N, k, bits, device: tuning.candidates(family, M, N, k, 132, bits)[0]
src2 = inspect.getsource(ops.linear_call).replace("and x.is_cuda\n", "\n").replace("and x.is_cuda ", "")
exec(compile(src2, ops.__file__, "exec"), ops.__dict__)
compiled.COMPILED_GEMV = True
asked = []
traced_gemv = compiled.traced_gemv
compiled.traced_gemv = lambda x, *a: (asked.append(type(x).__name__), traced_gemv(x, *a))[1]

N, K = (int(v) for v in (sys.argv[1] if len(sys.argv) > 1 else "4608x4608").split("x"))
LAYERS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
model = torch.nn.Sequential(*[torch.nn.Linear(K, N if i == LAYERS - 1 else K, bias=False, dtype=torch.bfloat16)
                              for i in range(LAYERS)])
quantize_(model, HLWQConfig(bits=5))
print(torch.__version__, triton.__version__, ops.__file__, f"{LAYERS} layers of {N}x{K}", flush=True)
torch._dynamo.reset()
profile = cProfile.Profile()
start = time.perf_counter()
try:
    with torch.no_grad(), fresh_cache():
        profile.runcall(torch.compile(model, fullgraph=True), torch.randn(1, K, dtype=torch.bfloat16))
except Exception as e:
    print("stopped:", type(e).__name__, str(e).splitlines()[0][:160])
print(f"until it stopped: {time.perf_counter() - start:.1f} s; traced_gemv asked {len(asked)} times")
stats = pstats.Stats(profile).stats
for (path, line, name), (calls, _, own, cumulative, _) in sorted(stats.items(), key=lambda kv: -kv[1][3]):
    if name in ("identify_mutated_tensors", "generate_ttir", "make_ir", "get_mutated_tensors", "compile_fx",
                "aot_module_simplified", "codegen_and_compile"):
        print(f"  {name:26s} {calls:4d} calls {cumulative:7.2f} s ({cumulative / calls:.3f} s a call)")
