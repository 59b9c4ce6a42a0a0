"""Host cost of HLWQTensor parameters in a compiled model, per call, on the CPU.

A ``torch.compile``-d stack of linears with HLWQ weights against the same stack
with plain weights calling a custom op of the same shape; both op bodies
return zeros, so what differs is what the subclass costs every call (dynamo's
guards, AOTAutograd's unwrapping) -- the host work that a CUDA-graph replay
still does. Also times dynamo's guard check alone. The backend is
``aot_eager`` (no C++ compiler needed)::

    python benchmarks/profile_compiled_host.py --layers 64
"""

from __future__ import annotations

import argparse
import timeit

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torchao.quantization import quantize_

import hlwq_ops


@torch.library.custom_op("hlwq_bench::plain_linear", mutates_args=())
def plain_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.new_zeros((*x.shape[:-1], w.shape[0]))


@plain_linear.register_fake
def _(x, w):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


class PlainLinear(torch.nn.Linear):
    def forward(self, x):
        return plain_linear(x, self.weight)


def _zeros_for_hlwq() -> None:
    """hlwq.linear's and hlwq.linear_inference's CPU bodies return zeros (this process only), like
    ``plain_linear``."""

    def zeros(x, qdata, scale, bias, bits, block_size, K, codebook=None):
        return x.new_zeros((*x.shape[:-1], qdata.shape[0]))

    torch.library.register_kernel("hlwq::linear", "cpu", zeros)
    lib = torch.library.Library("hlwq", "IMPL")  # linear_inference is not a custom_op: no register_kernel
    lib.impl("linear_inference", zeros, "CPU", allow_override=True)
    _KEEP.append(lib)


_KEEP: list = []  # the Library above lives as long as the process


def build(kind: str, layers: int) -> torch.nn.Module:
    cls = PlainLinear if kind == "plain" else torch.nn.Linear
    model = torch.nn.Sequential(*[cls(128, 128, bias=False) for _ in range(layers)]).to(torch.bfloat16).eval()
    if kind == "hlwq":
        quantize_(model, hlwq_ops.hlwq_q5())
    return model


def best_us(fn, n: int = 300) -> float:
    """Microseconds per call, the best of five runs of ``n`` calls (after warming up)."""
    for _ in range(5):
        fn()
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=64)
    a = p.parse_args()
    _zeros_for_hlwq()
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.no_grad():
        for kind in ("plain", "hlwq"):
            torch.manual_seed(0)
            model = build(kind, a.layers)
            torch._dynamo.reset()

            def step(inp, model=model):
                return model(inp)

            compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
            call_us = best_us(lambda: compiled(x))
            guards = _debug_get_cache_entry_list(step.__code__)[0].guard_manager
            guard_us = best_us(lambda: guards.check({"inp": x, "model": model}))
            print(f"{kind:5s}: compiled call {call_us:7.1f} us ({call_us / a.layers:5.2f} per layer), "
                  f"guards {guard_us:6.1f} us ({guard_us / a.layers:5.2f} per layer), {a.layers} layers", flush=True)


if __name__ == "__main__":
    main()
