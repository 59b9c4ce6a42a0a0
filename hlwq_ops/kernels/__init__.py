"""Triton kernels (no torch.library here): FWHT, LUT GEMV, tensor-core GEMMs, dequantization.

:func:`linear_rotated` is the CUDA ``y = xr @ Wr.T + bias`` and :func:`linear`
the CUDA ``y = x @ W_hat.T + bias``; both pick the kernel family by M
(:func:`hlwq_ops.kernels.tuning.path_for`). On the "mma" path the
register-operand kernel (:mod:`.wgmma`) -- or, where the tuner finds them
faster, the tensor-core GEMV (:mod:`.tcgemv`, M <= 8), the warp-specialized
kernel (:mod:`.wsmma`, sm_90, M >= 16), its register-operand variant
(:mod:`.wsrs`, sm_90, M <= 2048) or dequantize + cuBLAS (M > 64 where the
warp-specialized kernel runs) -- serves the layers it supports and the
general one (:mod:`.mma`) the rest.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..codebook import codebook as standard_codebook
from ..hadamard import fwht_ref
from . import tuning
from .common import arrival_counters, counter_buffer, pdl, reserve_counters, sm_count, unit_stride
from .dequant import dequant_linear, dequantize_rotated
from .fwht import MAX_KERNEL_BLOCK, fwht
from .fwht import prepare as prepare_fwht
from .gemv import can_rotate, gemv, gemv_plan
from .launch import config_key
from .mma import mma
from .tcgemv import aligned as tc_aligned
from .tcgemv import as_operand, tc_gemv
from .tcgemv import runs_on as tc_runs_on
from .tcgemv import supports as tc_supports
from .wgmma import permute_activations, supports, wgmma
from .wgmma import prepare as prepare_wgmma
from .wsmma import aligned as ws_aligned
from .wsmma import runs_on as ws_runs_on
from .wsmma import supports as ws_supports
from .wsmma import ws_mma
from .wsrs import activation_span, ws_rs

__all__ = [
    "COMPILED_GEMV",
    "MAX_KERNEL_BLOCK",
    "TracedGemv",
    "compiled_inputs",
    "dequant_linear",
    "dequantize_rotated",
    "fwht",
    "gemv",
    "linear",
    "linear_rotated",
    "mma",
    "note_weight",
    "tc_gemv",
    "traced_gemv",
    "tuning",
    "wgmma",
    "ws_mma",
    "ws_rs",
]

_KERNELS = {"gemv": gemv, "mma": mma}


_PREPARED: set[tuple[torch.device, int, int]] = set()


def note_weight(qdata: torch.Tensor, scale: torch.Tensor, bits: int, block_size: int) -> None:
    """Get the device ready for a packed weight, when one is made (real CUDA tensors only).

    The buffers the kernels keep per device -- split-K arrival counters, the
    standard codebook, the FWHT's sign matrices, the tensor-core kernel's lane
    tables -- are made now, once per (device, bits, block size). Made lazily,
    they would come from whatever call is first, which may run in the memory
    pool of torch.compile's CUDA graphs ("reduce-overhead", as transformers'
    ``generate()`` with a static cache compiles), where a tensor that outlives
    the call is an error. The weight is also noted for tuning
    (:func:`hlwq_ops.kernels.tuning.remember`). Calls of the raw ops on
    packed tensors that no HLWQ weight was ever made from still make these
    buffers on first use.
    """
    if torch.compiler.is_compiling() or type(qdata) is not torch.Tensor or not qdata.is_cuda:
        return
    key = (qdata.device, bits, block_size)
    if key not in _PREPARED:
        with torch.cuda.device(qdata.device):
            if torch.cuda.is_current_stream_capturing():  # made inside a capture: nothing may be allocated
                return
            arrival_counters(qdata.device, 1)
            table = standard_codebook(bits, qdata.device)
            torch._dynamo.mark_static_address(table)  # (an input of compiled graphs: compiled_inputs)
            _TABLES[(bits, qdata.device)] = table
            prepare_fwht(block_size, qdata.device)
            prepare_wgmma(bits, block_size, qdata.device)
        _PREPARED.add(key)
    tuning.remember(qdata, scale)


def _compiled_gemv_requested() -> bool:
    value = os.environ.get("HLWQ_COMPILED_GEMV", "")
    if value not in ("", "0", "1"):
        raise ValueError(f"HLWQ_COMPILED_GEMV must be 0 or 1 (or unset: 0), got {value!r}")
    return value == "1"


# ``HLWQ_COMPILED_GEMV=1`` (read at import): compiled graphs call ``hlwq.linear_compiled``, whose decode-size GEMV
# Inductor launches itself, instead of the opaque ``hlwq.linear_inference``. Off by default: the kernel it launches
# (plain stores) and the compiled graphs were checked on the CPU only (compiled for sm_90 offline, Inductor's mutation
# analysis run offline, dynamo's tracing on CPU tensors; benchmarks/NOTES.md session 39), never run on a GPU.
COMPILED_GEMV = _compiled_gemv_requested()

# (bits, device) -> the standard codebook there, for compiled graphs (compiled_inputs): a plain dict that dynamo reads.
_TABLES: dict[tuple[int, torch.device], torch.Tensor] = {}


def compiled_inputs(bits: int, codebook: torch.Tensor | None,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """What ``hlwq.linear_compiled`` takes besides ``hlwq.linear``'s arguments: the codebook the GEMV looks codes up
    in and the device's split-K counter buffer (:func:`.common.reserve_counters`); None before an HLWQ weight was
    made on ``device`` (:func:`note_weight` makes both), where a compiled graph calls ``hlwq.linear_inference``.

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

    plan: object  # .gemv._Plan
    offset: int  # the counters' first index in the buffer (0 without split K)
    x: torch.Tensor  # (M, K), unit stride along K
    scale: torch.Tensor
    bias: torch.Tensor | None


def traced_gemv(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
                block_size: int, K: int, codebook: torch.Tensor | None) -> TracedGemv | None:
    """The GEMV launch for a call of ``hlwq.linear_compiled``, or None where :func:`linear` would run another kernel
    family, the GEMV would not rotate the activations itself, or the row count is symbolic (a dynamic shape).

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

    device = qdata.device
    if os.environ.get("HLWQ_AUTOTUNE", "1") == "0":  # (no random weight to make)
        return tuning.candidates("gemv", M, N, k_pad, sm_count(device), bits)[0]
    with _disable_current_modes(), torch.no_grad():
        q = torch.randint(0, 256, tuple(qdata.shape), dtype=torch.uint8, device=device)
        s = torch.rand(tuple(scale.shape), dtype=torch.float16, device=device) + 0.5
        x2 = torch.randn(M, K, dtype=dtype, device=device)
        return tuning.config_for("gemv", M, N, k_pad, bits, (q, s),
                                 _gemv_run(x2, None, bits, block_size, None, dtype))


def _rotated(x2, k_pad, block_size, dtype=torch.float32, per_word=0, span=None, dependent=False) -> torch.Tensor:
    """Raw (M, K) activations padded to ``k_pad`` and rotated, by the FWHT kernel where its tile fits (arguments as
    :func:`.fwht.fwht` takes them)."""
    x2 = F.pad(x2, (0, k_pad - x2.shape[1])) if k_pad != x2.shape[1] else x2
    if block_size > MAX_KERNEL_BLOCK:  # the FWHT kernel's tile would not fit
        xr = fwht_ref(x2.float(), block_size)
        return permute_activations(xr, dtype, span) if per_word else xr.to(dtype)
    return fwht(x2, block_size, dtype, per_word, span, dependent)


def _gemv_run(x2, bias, bits, block_size, codebook, out_dtype):
    """``run(config, qdata, scale)``: the GEMV path of :func:`linear` on raw (M, K) activations (rotated in the
    kernel where the config's slice holds whole blocks, else by the FWHT kernel first), as the tuner times it."""

    def run(config, q, s):
        if can_rotate(bits, block_size, config):
            return gemv(x2, q, s, bias, bits, block_size, codebook, out_dtype, config, rotate=True)
        xr = _rotated(x2, s.shape[1] * block_size, block_size)
        return gemv(xr, q, s, bias, bits, block_size, codebook, out_dtype, config)

    return run


def _runs_ws(qdata: torch.Tensor, bits: int, block_size: int, codebook: torch.Tensor | None,
             dtype: torch.dtype) -> bool:
    """Whether the warp-specialized kernel (:mod:`.wsmma`) serves this layer and activation dtype on its device."""
    return ws_supports(bits, block_size, codebook, dtype) and ws_runs_on(qdata.device) and ws_aligned(qdata)


def _dequant_cublas(x, qdata, scale, bias, bits, block_size, codebook, out_dtype) -> torch.Tensor:
    """Dequantize + cuBLAS on rotated activations, multiplied in the 16-bit compute dtype (:func:`_compute_dtype`)."""
    compute = _compute_dtype(out_dtype)
    return dequant_linear(x.to(compute), qdata, scale, None if bias is None else bias.to(compute), bits, block_size,
                          codebook).to(out_dtype)


def launches_dependent(device: torch.device) -> bool:
    """Whether the tensor-core GEMV, the wgmma kernel and the register-operand ws kernel (with its split-K sum)
    launch with programmatic dependent launch behind the FWHT rotating their activations, which lets them launch at
    its top: by default yes, on sm_90 and newer (:func:`.common.pdl`; ``HLWQ_PDL=0`` turns it off).

    Their programs are then resident when the rotation ends. Measured on an H200, the whole ``F.linear`` with and
    without, interleaved in one process (``benchmarks/RESULTS.md`` 25b-c and 26): the register-operand kernel 3-9%
    less time at M = 3..64 on 14336 x 4096, 4096 x 14336 and 4096 x 4096, 1-4.5% at M = 128..512 (M = 2048 within
    its noise); the tensor-core GEMV 1.5-12% less at M = 3..8; the wgmma kernel (1024 x 4096, M = 8) 7.5-10% less;
    slower in none of section 26's 44 cases. The warp-specialized kernel and dequantize + cuBLAS were not timed
    with it and launch without, as do the kernels of :func:`linear_rotated` (no FWHT before them), unless
    ``HLWQ_PDL=1``.
    """
    return pdl(device, default=True)


def _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, out_dtype, ws,
                        dependent) -> torch.Tensor:
    """The tensor-core kernels (and, at larger M, dequantize + cuBLAS): whichever the tuner found fastest here.

    ``activations(per_word, span, dependent)`` gives the rotated 16-bit activations in
    the kernel's order: permuted for :func:`wgmma` and :func:`ws_rs`
    (``per_word=8``; for :func:`ws_rs` within runs of ``span`` where its
    config says so, :func:`.wsrs.activation_span`), in K order for the others
    (``per_word=0``, bfloat16); its ``dependent`` lets the FWHT rotating them
    (if one does) launch the next kernel early, as :func:`.fwht.fwht` takes it.
    ``dependent``: whether that FWHT and the tensor-core GEMV, wgmma or
    register-operand kernel after it launch that way (:func:`launches_dependent`
    in :func:`linear`; False in :func:`linear_rotated`, where no FWHT runs).
    Tuning times each candidate with its rotation. The families timed
    (``tuning.candidates``): the wgmma kernel up to ``MMA_MAX_M_WGMMA`` rows
    (or wherever the warp-specialized kernel does not run); the tensor-core
    GEMV up to ``TC_MAX_M`` rows where it reads the layer (Q4/Q5, blocks of
    128, 16-byte aligned rows, sm_80 or newer); the warp-specialized kernel
    from ``WS_MIN_M`` rows where it runs (sm_90, Gluon; ``ws``, from
    :func:`_runs_ws`), and its register-operand variant (:mod:`.wsrs`) up to
    ``WSRS_MAX_M`` rows there; dequantize + cuBLAS past ``MMA_MAX_M_WGMMA``
    rows beside it, first (the untuned default), unless ``HLWQ_PATH=mma``
    forces the tensor-core kernels.
    """

    def run(config, q=qdata, s=scale):
        kernel = config.get("kernel")
        if kernel == "tc":
            xr = as_operand(activations(0, None, dependent))
            return tc_gemv(xr, q, s, bias, bits, block_size, None, out_dtype, config, dependent)
        if kernel == "ws":
            return ws_mma(as_operand(activations(0)), q, s, bias, bits, block_size, out_dtype, config)
        if kernel == "wsrs":
            xp = as_operand(activations(8, activation_span(config), dependent))
            return ws_rs(xp, q, s, bias, bits, block_size, out_dtype, config, dependent)
        if kernel == "dequant":
            return _dequant_cublas(activations(0), q, s, bias, bits, block_size, None, out_dtype)
        return wgmma(activations(8, None, dependent), q, s, bias, bits, block_size, out_dtype, config, dependent)

    families = []
    if ws and M > tuning.MMA_MAX_M_WGMMA and tuning.forced_path() != "mma":
        families.append("dequant")  # first: what runs untuned (the path of layers without the ws kernel)
    if M <= tuning.MMA_MAX_M_WGMMA or not ws:
        families.append("wgmma")
    if M <= tuning.TC_MAX_M and tc_supports(bits, block_size) and tc_aligned(qdata) and tc_runs_on(qdata.device):
        families.append("tc")
    if ws and M >= tuning.WS_MIN_M:
        families.append("ws")
    if ws and M <= tuning.WSRS_MAX_M:
        families.append("wsrs")
    kernel = "+".join(families)
    return run(tuning.config_for(kernel, M, qdata.shape[0], k_pad, bits, (qdata, scale), run))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The 16-bit dtype rotated activations of ``dtype`` are multiplied in on the tensor-core and cuBLAS paths.

    bfloat16 for float16: a rotated coordinate can be up to sqrt(B) times the
    largest input (about 11x at B = 128), so float16 activations that fit can
    rotate past 65504 (inf). bfloat16 has float32's range; its coarser
    rounding is a tenth of Q5's own error. The GEMV rotates in float32.
    """
    return torch.bfloat16 if dtype == torch.float16 else dtype


def linear_rotated(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``xr @ Wr.T + bias`` for (..., K_pad) rotated activations; (..., N) in ``out_dtype``."""
    lead, k_pad = xr.shape[:-1], xr.shape[-1]
    N = qdata.shape[0]
    x2 = xr.reshape(-1, k_pad)
    M = x2.shape[0]
    if M == 0:
        return xr.new_empty((*lead, N), dtype=out_dtype)
    fast = supports(bits, block_size, codebook, out_dtype)
    ws = fast and _runs_ws(qdata, bits, block_size, codebook, out_dtype)
    path = tuning.path_for(M, fast, ws)
    if path == "mma" and fast:

        def activations(per_word, span=None, dependent=False):  # (rotated already: no FWHT to launch early)
            return permute_activations(x2, _compute_dtype(out_dtype), span) if per_word else x2

        y = _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, out_dtype, ws, False)
    elif path in _KERNELS:
        x2 = x2.to(torch.float32).contiguous()
        kernel = _KERNELS[path]

        def run(config, q=qdata, s=scale):
            return kernel(x2, q, s, bias, bits, block_size, codebook, out_dtype, config)

        y = run(tuning.config_for(path, M, N, k_pad, bits, (qdata, scale), run))
    else:
        y = _dequant_cublas(x2, qdata, scale, bias, bits, block_size, codebook, out_dtype)
    return y.reshape(*lead, N)


def linear(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    K: int,
    codebook: torch.Tensor | None,
) -> torch.Tensor:
    """``x @ W_hat.T + bias`` for (..., K) raw activations; (..., N) in x's dtype.

    On the GEMV path the kernel pads and rotates ``x`` itself (float32); on
    the register-operand tensor-core path the FWHT kernel rotates it into the
    kernel's order and 16-bit dtype (:func:`_compute_dtype`); otherwise ``x``
    is padded, rotated by the FWHT kernel (float32 for the general
    tensor-core kernel, the 16-bit compute dtype for dequantize + cuBLAS) and
    handed to :func:`linear_rotated`.
    """
    lead, N = x.shape[:-1], qdata.shape[0]
    k_pad = scale.shape[1] * block_size
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    if M == 0:
        return x.new_empty((*lead, N))

    fast = supports(bits, block_size, codebook, x.dtype)
    ws = fast and _runs_ws(qdata, bits, block_size, codebook, x.dtype)
    path = tuning.path_for(M, fast, ws)
    if path == "mma" and fast:

        def activations(per_word, span=None, dependent=False):
            return _rotated(x2, k_pad, block_size, _compute_dtype(x.dtype) if per_word else torch.bfloat16, per_word,
                            span, dependent)

        y = _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, x.dtype, ws,
                                launches_dependent(x.device))
    elif path == "gemv":
        x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
        run = _gemv_run(x2, bias, bits, block_size, codebook, x.dtype)
        y = run(tuning.config_for("gemv", M, N, k_pad, bits, (qdata, scale), run), qdata, scale)
    else:  # the general tensor-core kernel reads float32 activations, cuBLAS 16-bit ones (_compute_dtype)
        xr = _rotated(x2, k_pad, block_size, torch.float32 if path == "mma" else _compute_dtype(x.dtype))
        y = linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, x.dtype)
    return y.reshape(*lead, N)
