"""What ``hlwq.linear_compiled`` needs from the kernels: a decode-size GEMV that Inductor launches itself.

In ``torch.compile``'s default mode every opaque op call pays the dispatcher and this library's Python each time. The
``triton_op`` ``hlwq.linear_compiled`` (:mod:`hlwq_ops.ops`) is traced instead, and its body asks
:func:`traced_gemv` for the launch: the GEMV's plan for the call's shapes, with the tuned config fixed while tracing
and the kernel that stores its row sums with ``tl.store`` (:func:`.gemv.gemv_plan`'s ``traced``), which Inductor's
mutation analysis can read. The graph takes the standard codebook and the device's split-K counter buffer as inputs
(:func:`compiled_inputs`), so that neither is a constant baked into it. Opt-in (:data:`COMPILED_GEMV`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from . import tuning
from .common import counter_buffer, reserve_counters, sm_count, unit_stride
from .gemv import can_rotate, gemv_plan
from .launch import config_key
from .wgmma import supports

__all__ = ["COMPILED_GEMV", "TracedGemv", "compiled_inputs", "note_table", "traced_gemv"]


def _compiled_gemv_requested() -> bool:
    value = os.environ.get("HLWQ_COMPILED_GEMV", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"HLWQ_COMPILED_GEMV must be 0 or 1 (or unset: 0), got {value!r}")
    return value == "1"


# ``HLWQ_COMPILED_GEMV=1`` (read at import): compiled graphs call ``hlwq.linear_compiled``, whose decode-size GEMV
# Inductor launches itself, instead of the opaque ``hlwq.linear_inference``. Off by default: the kernel it launches
# (plain stores) and the compiled graphs were built on the CPU (compiled for sm_90 offline, Inductor's mutation
# analysis run offline, dynamo's tracing on CPU tensors; benchmarks/NOTES.md session 39). On an H200 with torch 2.11
# the test that Inductor launches the GEMV failed in every case (benchmarks/RESULTS.md 41b): it does not work yet.
COMPILED_GEMV = _compiled_gemv_requested()

# (bits, device) -> the standard codebook there, for compiled graphs (compiled_inputs): a plain dict that dynamo reads.
_TABLES: dict[tuple[int, torch.device], torch.Tensor] = {}


def note_table(bits: int, table: torch.Tensor) -> None:
    """Keep the standard ``bits`` codebook made on a device for compiled graphs (:func:`compiled_inputs`), static."""
    torch._dynamo.mark_static_address(table)
    _TABLES[(bits, table.device)] = table


def compiled_inputs(bits: int, codebook: torch.Tensor | None,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """What ``hlwq.linear_compiled`` takes besides ``hlwq.linear``'s arguments: the codebook the GEMV looks codes up
    in and the device's split-K counter buffer (:func:`.common.reserve_counters`); None before an HLWQ weight was
    made on ``device`` (:func:`hlwq_ops.kernels.note_weight` makes both), where a compiled graph calls
    ``hlwq.linear_inference``.

    ``torch.compile`` traces this (reads of two module dicts): both tensors become inputs of the graph (checked on the
    CPU), static ones (``torch._dynamo.mark_static_address``), so that CUDA graph trees should neither copy them nor
    refuse the counters' mutation (read in torch's ``check_for_mutation``; not yet run on a GPU).
    """
    counters = counter_buffer(device)
    table = _TABLES.get((bits, device)) if codebook is None else codebook
    if counters is None or table is None:
        return None
    return table, counters


class TracedGemv(NamedTuple):
    """The GEMV of a call that Inductor launches itself (:func:`traced_gemv`): the launch, with its counters'
    offset in the buffer, and the operands as the kernel takes them."""

    plan: object  # .common.SplitPlan
    offset: int  # the counters' first index in the buffer (0 without split K)
    x: torch.Tensor  # (M, K), unit stride along K
    scale: torch.Tensor
    bias: torch.Tensor | None


def traced_gemv(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
                block_size: int, K: int, codebook: torch.Tensor | None) -> TracedGemv | None:
    """The GEMV launch for a call of ``hlwq.linear_compiled``, or None where :func:`hlwq_ops.kernels.linear` would run
    another kernel family, the GEMV would not rotate the activations itself, or the row count is symbolic (a dynamic
    shape).

    Runs while the op is traced (fake tensors; shapes are what it reads). The config is the tuned one
    (:mod:`.tuning`); a key not yet tuned is tuned now, on random tensors of the layer's shapes, as the first eager
    call would (:func:`_tune_gemv`). The kernel is the GEMV with plain stores and without PDL
    (:func:`.gemv.gemv_plan`'s ``traced``).
    """
    if x.device.type != "cuda":
        return None
    x2 = x.reshape(-1, K)
    M, N = x2.shape[0], qdata.shape[0]
    if not isinstance(M, int) or M == 0:
        return None
    if tuning.path_for(M, supports(bits, block_size, codebook, x.dtype)) != "gemv":
        return None
    k_pad = scale.shape[1] * block_size
    config = tuning.tuned("gemv", M, N, k_pad, bits, x.device) or _tune_gemv(M, N, k_pad, K, bits, block_size,
                                                                              qdata, scale, x.dtype)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    scale, bias = unit_stride(scale), unit_stride(bias)
    strides = (x2.stride(0), qdata.stride(0), scale.stride(0))
    # read as int32 words, as the eager wrapper's view would require; a symbolic stride (a dynamic sequence length
    # sliced away, as transformers' lm_head input) cannot key a plan
    if (not can_rotate(bits, block_size, config) or not all(isinstance(v, int) for v in strides)
            or qdata.stride(1) != 1 or qdata.stride(0) % 4 or not isinstance(qdata.storage_offset(), int)
            or qdata.storage_offset() % 4):
        return None
    plan = gemv_plan(M, K, N, k_pad, bits, block_size, config_key(config), True, bias is not None,
                     qdata.numel() >= 2**33, x.device, False, (strides[0], strides[1] // 4, strides[2]), traced=True)
    offset = 0
    if plan.counters:  # a region of the device's buffer, never a buffer made while tracing
        buf = counter_buffer(x.device)
        if buf is None or buf.numel() < plan.counters:
            return None
        offset = reserve_counters(x.device, plan.counters)[1]
    return TracedGemv(plan, offset, x2, scale, bias)


def _tune_gemv(M, N, k_pad, K, bits, block_size, qdata, scale, dtype) -> dict:
    """Tune the GEMV for a layer seen only as fake tensors (while tracing): on real random tensors of its shapes,
    outside every tracing mode. Returns the tuned config (the untuned default where tuning is off)."""
    from torch.utils._python_dispatch import _disable_current_modes

    from . import _gemv_run  # (the package imports this module)

    device = qdata.device
    if os.environ.get("HLWQ_AUTOTUNE", "1") == "0":  # (no random weight to make)
        return tuning.candidates("gemv", M, N, k_pad, sm_count(device), bits)[0]
    with _disable_current_modes(), torch.no_grad():
        q = torch.randint(0, 256, tuple(qdata.shape), dtype=torch.uint8, device=device)
        s = torch.rand(tuple(scale.shape), dtype=torch.float16, device=device) + 0.5
        x2 = torch.randn(M, K, dtype=dtype, device=device)
        return tuning.config_for("gemv", M, N, k_pad, bits, (q, s),
                                 _gemv_run(x2, None, bits, block_size, None, dtype))
