"""Inductor's mutation analysis of the GEMV as ``hlwq.linear_compiled`` launches it, without a GPU.

Inductor reads which arguments a user Triton kernel writes from its TTIR
(``identify_mutated_tensors``) and clones every argument it lists before the
launch. It cannot read an inline-PTX store: a kernel with one is taken to write
every argument, so the packed weight would be copied on every call. This
compiles the GEMV for an sm_90 target on the CPU (a stand-in Triton driver that
only names the target) and prints what the analysis finds, with the plain stores
``hlwq.linear_compiled`` uses and with the inline-PTX stores of the eager
kernel. Needs torch with Triton 3.6 (the GPU machine's pair)::

    PYTHONPATH=. python benchmarks/diag_mutations.py
"""

import logging

import torch
import triton
from triton.backends.compiler import GPUTarget
from torch._higher_order_ops.triton_kernel_wrap import identify_mutated_tensors

from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.gemv import gemv_plan
from hlwq_ops.kernels.launch import config_key


class _TargetOnly:
    """The one thing the analysis asks of Triton's driver."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def mutated(config: dict, M: int, plain: bool, N: int = 14336, K: int = 4096, bits: int = 5) -> list[str]:
    plan = gemv_plan(M, K, N, K, bits, 128, config_key(config), True, True, False, torch.device("cuda"), False,
                     (K, K * bits // 32, K // 128), traced=True)
    constexprs = dict(plan.launch.constexprs, PLAIN_STORES=plain)
    empty = torch.empty
    tensors = [empty(M, K, dtype=torch.bfloat16), empty(N, K * bits // 8, dtype=torch.uint8),
               empty(N, K // 128, dtype=torch.float16), empty(32), empty(N, dtype=torch.bfloat16),
               empty(M, N, dtype=torch.bfloat16), empty(*(plan.ws_shape or (1,))), empty(4096, dtype=torch.int32)]
    kwargs = dict(zip(plan.launch.kernel.arg_names, tensors + list(plan.launch.ints)), **constexprs)
    return identify_mutated_tensors(plan.launch.kernel, kwargs, {})


def main() -> None:
    logging.getLogger("torch._higher_order_ops.triton_kernel_wrap").setLevel(logging.CRITICAL)  # (its traceback)
    triton.runtime.driver.set_active(_TargetOnly())
    print(f"torch {torch.__version__}, Triton {triton.__version__}, sm_90 target, Q5 14336 x 4096")
    for M in (1, 2):
        for config in tuning.candidates("gemv", M, 14336, 4096, 132, 5)[:3]:
            for plain in (True, False):
                print(f"M={M} {config} plain stores={plain}: {mutated(config, M, plain)}", flush=True)


if __name__ == "__main__":
    main()
