"""What ``hlwq.linear_compiled`` needs from the kernels: a decode-size GEMV that Inductor launches itself.

In ``torch.compile``'s default mode every opaque op call pays the dispatcher and this library's Python each time. The
``triton_op`` ``hlwq.linear_compiled`` (:mod:`hlwq_ops.ops`) is traced instead, and its body asks
:func:`traced_gemv` for the launch: the GEMV's plan for the call's shapes, with the tuned config fixed while tracing
and the kernel that stores its row sums with ``tl.store`` (:func:`.gemv.gemv_plan`'s ``traced``), which Inductor's
mutation analysis can read. Everything the launch writes (output, split-K partials and arrival counters) is made in
the graph, so the graph mutates none of its inputs. Opt-in (:data:`COMPILED_GEMV`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import tuning
from .common import env_flag, sm_count, unit_stride
from .gemv import can_rotate, gemv_plan
from .launch import config_key
from .wgmma import supports

__all__ = ["COMPILED_GEMV", "TracedGemv", "traced_gemv"]


def _compiled_gemv_requested() -> bool:
    return env_flag("HLWQ_COMPILED_GEMV", "0") is True


# ``HLWQ_COMPILED_GEMV=1`` (read at import): compiled graphs call ``hlwq.linear_compiled``, whose decode-size GEMV
# Inductor launches itself, instead of the opaque ``hlwq.linear_inference``. Off by default: measured only in
# torch.compile's default mode so far (benchmarks/RESULTS.md 42d), not in generate() or GraphDecoder. Its first form
# never ran: it asked for the op where dynamo traces, but dynamo does not trace an HLWQTensor's linear (a
# __torch_dispatch__ subclass: AOTAutograd dispatches it, on functional tensors), so compiled graphs kept the opaque
# op (RESULTS 41b; NOTES session 42). Set here, the flag also tags torch's compile caches (:func:`_tag_compile_caches`);
# changed later in a process (as the tests do), it does not: compile in fresh caches then
# (torch._inductor.utils.fresh_cache) after torch._dynamo.reset().
COMPILED_GEMV = _compiled_gemv_requested()
CACHE_TAG = "hlwq_compiled_gemv"


def _tag_compile_caches() -> None:
    """Add :data:`CACHE_TAG` to ``torch.compiler.config.cache_key_tag`` (kept if it is there already).

    The route is chosen while AOTAutograd traces an HLWQTensor's linear, after AOTAutograd's cache has been asked:
    its key (the dynamo graph, the inputs' outer metadata, the configs) is the same for both routes, so without the
    tag a graph compiled with the flag off is served to a process with it on (and the other way round), from the
    disk cache of an earlier run. The tag is torch's documented way to keep such caches apart.
    """
    tag = torch.compiler.config.cache_key_tag
    if CACHE_TAG not in tag.split("+"):
        torch.compiler.config.cache_key_tag = f"{tag}+{CACHE_TAG}" if tag else CACHE_TAG


if COMPILED_GEMV:  # (a setting of torch's, only where the user opted in: caches filled before import are keyed too)
    _tag_compile_caches()


class TracedGemv(NamedTuple):
    """The GEMV of a call that Inductor launches itself (:func:`traced_gemv`): the launch and the operands as the
    kernel takes them."""

    plan: object  # .common.SplitPlan
    x: torch.Tensor  # (M, K), unit stride along K
    scale: torch.Tensor
    bias: torch.Tensor | None


def traced_gemv(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
                block_size: int, K: int, codebook: torch.Tensor | None) -> TracedGemv | None:
    """The GEMV launch for a call of ``hlwq.linear_compiled``, or None where :func:`hlwq_ops.kernels.linear` would run
    another kernel family, the GEMV would not rotate the activations itself, or the row count is symbolic (a dynamic
    shape). Where the eager path's tuner weighs the GEMV against the tensor-core kernels at M = 2
    (``tuning.gemv_competes``), this takes the GEMV with its own tuned config: the eager call may run a tensor-core
    kernel there. At M = 3..8, where it weighs them on small layers only, this leaves the call to the opaque op and
    its tuner (the GEMV lost there on 4096 x 4096, ``benchmarks/NOTES.md`` session 32).

    Runs while the op is traced (fake tensors; shapes are what it reads). The config is the tuned one
    (:mod:`.tuning`); a key not yet tuned is tuned now, on random tensors of the layer's shapes, as the first eager
    call would (:func:`_tune_gemv`). The kernel is the GEMV with plain stores and without PDL
    (:func:`.gemv.gemv_plan`'s ``traced``).
    """
    if not _launches_on(x.device):
        return None
    x2 = x.reshape(-1, K)
    M, N = x2.shape[0], qdata.shape[0]
    if not isinstance(M, int) or M == 0:
        return None
    k_pad = scale.shape[1] * block_size
    competes = M <= tuning.GEMV_MAX_M_WGMMA and tuning.gemv_competes(M, N, k_pad)
    if tuning.path_for(M, supports(bits, block_size, codebook, x.dtype)) != "gemv" and not competes:
        return None
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
    return TracedGemv(plan, x2, scale, bias)


def _launches_on(device: torch.device) -> bool:
    """Whether compiled graphs launch the GEMV themselves on ``device`` (CUDA; elsewhere the op's fallback runs)."""
    return device.type == "cuda"


def _tune_gemv(M, N, k_pad, K, bits, block_size, qdata, scale, dtype) -> dict:
    """Tune the GEMV for a layer seen only as fake tensors (while tracing): on real random tensors of its shapes,
    outside every tracing mode. Returns the tuned config (the untuned default where tuning is off)."""
    from torch.utils._python_dispatch import _disable_current_modes

    from . import _gemv_run  # (the package imports this module)

    device = qdata.device
    if not tuning.autotune():  # (no random weight to make)
        return tuning.candidates("gemv", M, N, k_pad, sm_count(device), bits)[0]
    with _disable_current_modes(), torch.no_grad():
        q = torch.randint(0, 256, tuple(qdata.shape), dtype=torch.uint8, device=device)
        s = torch.rand(tuple(scale.shape), dtype=torch.float16, device=device) + 0.5
        x2 = torch.randn(M, K, dtype=dtype, device=device)
        return tuning.config_for("gemv", M, N, k_pad, bits, (q, s),
                                 _gemv_run(x2, None, bits, block_size, None, dtype))
