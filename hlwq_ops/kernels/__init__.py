"""Triton kernels (no torch.library here): FWHT, LUT GEMV, tensor-core GEMMs, dequantization.

:func:`linear_rotated` is the CUDA ``y = xr @ Wr.T + bias`` and :func:`linear`
the CUDA ``y = x @ W_hat.T + bias``; both pick the kernel family by M
(:func:`hlwq_ops.kernels.tuning.path_for`). On the "mma" path the
register-operand kernel (:mod:`.wgmma`) -- or, where the tuner finds them
faster, the tensor-core GEMV (:mod:`.tcgemv`, M <= 8), the warp-specialized
kernel (:mod:`.wsmma`, sm_90, M >= 16), its register-operand variant
(:mod:`.wsrs`, sm_90, M <= 2048), dequantize + cuBLAS (M > 64 where the
warp-specialized kernel runs) or, at M = 2 (on small layers up to M = 8), the
GEMV -- serves the layers it supports and the general one (:mod:`.mma`) the
rest.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..codebook import codebook as standard_codebook
from ..hadamard import fwht_ref
from . import common, compiled, tuning
from .common import arrival_counters, as_words, kernel_codebook, launch_split_plan, pdl, unit_stride
from .dequant import dequant_linear, dequantize_rotated
from .fwht import MAX_KERNEL_BLOCK, fwht
from .fwht import launch_plan as launch_fwht
from .fwht import plan_for as plan_fwht
from .fwht import prepare as prepare_fwht
from .gemv import MAX_GROUP, can_rotate, gemv, group_plan, launch_group
from .gemv import plan_for as plan_gemv
from .launch import clear_with_plans
from .mma import mma
from .tcgemv import aligned as tc_aligned
from .tcgemv import as_operand, tc_gemv
from .tcgemv import plan_for as plan_tc
from .tcgemv import runs_on as tc_runs_on
from .tcgemv import supports as tc_supports
from .wgmma import permute_activations, supports, wgmma
from .wgmma import plan_for as plan_wgmma
from .wgmma import prepare as prepare_wgmma
from .wsmma import aligned as ws_aligned
from .wsmma import runs_on as ws_runs_on
from .wsmma import supports as ws_supports
from .wsmma import ws_mma
from .wsrs import activation_span, ws_rs
from .wsrs import launch_plan as launch_rs
from .wsrs import plan_for as plan_rs

__all__ = [
    "MAX_KERNEL_BLOCK",
    "add_rms_norm",
    "compiled",
    "dequant_linear",
    "dequantize_rotated",
    "fwht",
    "gemv",
    "group_serves",
    "linear",
    "linear_glu",
    "linear_group",
    "linear_group_norm",
    "linear_rotated",
    "linear_siblings",
    "mma",
    "note_weight",
    "rms_norm",
    "silu_and_mul",
    "tc_gemv",
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
            standard_codebook(bits, qdata.device)
            prepare_fwht(block_size, qdata.device)
            prepare_wgmma(bits, block_size, qdata.device)
        _PREPARED.add(key)
    tuning.remember(qdata, scale)


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


def _rotated_run(kernel, xr, bias, bits, block_size, codebook, out_dtype):
    """``run(config, qdata, scale)``: the GEMV or the general tensor-core kernel (``kernel``) on rotated, padded
    (M, K_pad) activations, which it reads in float32, as :func:`linear_rotated` runs it and the tuner times it (the
    cast in each run: timed with the kernel, as the tensor-core families' permutes are, and only where it runs)."""

    def run(config, q, s):
        return kernel(xr.to(torch.float32).contiguous(), q, s, bias, bits, block_size, codebook, out_dtype, config)

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


def _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, out_dtype, *, ws, dependent,
                        gemv_run=None) -> tuple[torch.Tensor, str, dict]:
    """The tensor-core kernels (and, at larger M, dequantize + cuBLAS; at few rows the GEMV): whichever the tuner found
    fastest here; the output, the families timed (``tuning.config_for``'s ``kernel``) and the config that ran.

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
    forces the tensor-core kernels. ``gemv_run(config, qdata, scale)`` runs the GEMV, timed first (the callers
    pass it where ``tuning.gemv_competes``); None: not timed.
    """

    def run(config, q=qdata, s=scale):
        kernel = config.get("kernel")
        if kernel == "gemv":
            return gemv_run(config, q, s)
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

    families = ["gemv"] if gemv_run is not None else []  # (first: the untuned default, as before it competed)
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
    config = tuning.config_for(kernel, M, qdata.shape[0], k_pad, bits, (qdata, scale), run)
    return run(config), kernel, config


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
    if M == 0 or N == 0:
        return xr.new_empty((*lead, N), dtype=out_dtype)
    fast = supports(bits, block_size, codebook, out_dtype)
    ws = fast and _runs_ws(qdata, bits, block_size, codebook, out_dtype)
    path = tuning.path_for(M, fast, ws)
    if path == "mma" and fast:

        def activations(per_word, span=None, dependent=False):  # (rotated already: no FWHT to launch early)
            return permute_activations(x2, _compute_dtype(out_dtype), span) if per_word else x2

        gemv_run = None
        if tuning.gemv_competes(M, N, k_pad):
            gemv_run = _rotated_run(gemv, x2, bias, bits, block_size, codebook, out_dtype)
        y = _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, out_dtype, ws=ws,
                                dependent=False, gemv_run=gemv_run)[0]
    elif path in _KERNELS:
        run = _rotated_run(_KERNELS[path], x2, bias, bits, block_size, codebook, out_dtype)
        y = run(tuning.config_for(path, M, N, k_pad, bits, (qdata, scale), run), qdata, scale)
    else:
        y = _dequant_cublas(x2, qdata, scale, bias, bits, block_size, codebook, out_dtype)
    return y.reshape(*lead, N)


class _Resolved(NamedTuple):
    """A call of :func:`linear` (or :func:`linear_group`) resolved once for its signature (:func:`_signature`,
    :func:`_group_signature`): its launches with their plans made (``run``), and what chose its config, which must
    still choose the same for the entry to hold (:meth:`current`).

    An entry holds until ``tuning.config_for`` is another function or, on a GPU, the tuning table no longer holds the
    very config object it ran (retuned, reloaded, a replaced table), or :func:`.launch.clear_plans`. It takes as
    fixed what else :func:`linear` reads: the module's thresholds and functions (``tuning.path_for``,
    :func:`.gemv.gemv_plan`, ...) and a tuned config's contents. Whoever changes those clears the plans, as the tests
    do before each test (``tests/conftest.py``)."""

    chooser: object  # tuning.config_for when resolved
    tuning_key: str | None  # the config's key in the tuning table (None on the CPU: nothing is tuned there)
    config: dict
    run: Callable  # run(x2, *operands, out_dtype) -> (M, N): the call's launches
    K: int
    N: int
    copy_x: bool  # the (M, K) view of x is not as the launches read it: copied, contiguous

    def current(self) -> bool:
        return tuning.config_for is self.chooser and (
            self.tuning_key is None or tuning._TUNED.get(self.tuning_key) is self.config)

    def __call__(self, x, *operands) -> torch.Tensor:
        """``operands``: :func:`linear`'s ``qdata, scale, bias, codebook``, or :func:`linear_group`'s weights."""
        x2 = x.reshape(-1, self.K)
        x2 = x2.contiguous() if self.copy_x else x2
        return self.run(x2, *operands, x.dtype).reshape(*x.shape[:-1], self.N)


def _gemv_launches(plan, bits, x2, qdata, scale, bias, codebook, out_dtype) -> torch.Tensor:
    """A resolved GEMV call (:func:`.gemv.plan_for`'s ``plan``, the kernel rotating ``x2``)."""
    return launch_split_plan(plan, x2, as_words(qdata), unit_stride(scale), unit_stride(bias),
                             kernel_codebook(bits, codebook, qdata.device), out_dtype)


class _RotationKey(NamedTuple):
    """What an input's rotated activations depend on, as :func:`.fwht.fwht` takes it (the launch with PDL too)."""

    dtype: torch.dtype
    per_word: int
    span: int | None
    dependent: bool


class _RotatedLaunches(NamedTuple):
    """A resolved tensor-core call: the FWHT's ``rotation`` (:func:`.fwht.plan_for`) of the activations as the
    kernel reads them (``rotation_key``), then ``launch(plan, ...)``, the kernel's (``table``: the standard
    codebook). Calls on one input whose ``rotation_key`` is the same read the same rotated activations
    (:func:`linear_siblings`)."""

    rotation: tuple
    rotation_key: _RotationKey
    launch: Callable
    plan: object
    table: torch.Tensor

    def rotate(self, x2: torch.Tensor) -> torch.Tensor:
        return launch_fwht(self.rotation, x2, torch.empty(x2.shape, device=x2.device, dtype=self.rotation_key.dtype))

    def multiply(self, xr, qdata, scale, bias, out_dtype) -> torch.Tensor:
        return self.launch(self.plan, xr, as_words(qdata), unit_stride(scale), unit_stride(bias), self.table,
                           out_dtype)

    def __call__(self, x2, qdata, scale, bias, codebook, out_dtype) -> torch.Tensor:
        return self.multiply(self.rotate(x2), qdata, scale, bias, out_dtype)


# Call signatures of linear() resolved (emptied by launch.clear_plans): the GEMV's, and the tensor-core kernels' that
# read the FWHT's output (_TENSOR_CORE); and linear_group()'s one launch. A later call with the same signature skips
# the path and family decisions, the tuning lookup and the wrappers' derivations. On a CPU with the launches stubbed
# out (benchmarks/profile_linear_cpu.py), a call took 19.5-19.7 -> 13.8-14.5 us with the GEMV at M = 1 (NOTES 40, 41),
# 26.3-27.9 -> 13.7-13.9 with the register-operand ws kernel at M = 16 and 128, and 28.7-31.5 -> 16.6-17.0 with the
# tensor-core GEMV at M = 4..8 (its "before" without Triton's per-launch binding; NOTES session 41); a group of
# Llama-3-8B's q, k and v ~45 -> ~29 us, the ops' argument checks included (NOTES session 56).
_RESOLVED: dict[tuple, _Resolved] = clear_with_plans({})
_MAX_RESOLVED = 1024  # as many as the wrappers' plan caches keep


def _signature(x, qdata, scale, bias, bits, block_size, K, codebook) -> tuple:
    """What :func:`linear`'s choices for a call depend on, the tuned config aside: shapes, strides, dtypes, the
    device, whether the codes start 16-byte aligned (the tensor-core kernels' families need it; a storage from
    outside torch's allocator may not be), whether there is a bias and a custom codebook, and the two settings read
    from the environment."""
    return (x.shape, x.stride(), x.dtype, x.device, qdata.shape, qdata.stride(), qdata.storage_offset(),
            not qdata.data_ptr() & 15, scale.shape, scale.stride(),
            None if bias is None else (bias.stride(), bias.dtype), codebook is None, bits, block_size, K,
            os.environ.get("HLWQ_PATH"), common.pdl_requested())


def _resolve(signature, kernel: str, config: dict, make_run: Callable[[], Callable], x2, N: int, k_pad: int,
             bits: int, K: int, copy_x: bool) -> None:
    """Keep a call's launches (``make_run()``, made only here) for later calls with ``signature`` (:func:`linear`'s,
    :func:`linear_group`'s),
    if the config is one the tuner will choose again: a tuned one of ``kernel`` (its families), on the CPU the
    untuned default; with ``HLWQ_AUTOTUNE=0`` on a GPU, or a config chosen during a capture, nothing."""
    M = x2.shape[0]
    tuning_key = None if x2.device.type == "cpu" else tuning.key_for(kernel, M, N, k_pad, bits, x2.device)
    if tuning_key is not None and tuning._TUNED.get(tuning_key) is not config:  # (untuned: tuning off, a capture)
        return
    if len(_RESOLVED) >= _MAX_RESOLVED:  # (signatures that vary without end, e.g. a stride set by a prompt's length)
        _RESOLVED.clear()
    _RESOLVED[signature] = _Resolved(tuning.config_for, tuning_key, config, make_run(), K, N, copy_x)


def _gemv_resolved(x2, qdata, scale, bias, bits, block_size, config, glu: bool = False) -> Callable:
    """The launches of a GEMV call that rotates in the kernel (with ``glu``, :func:`linear_glu`'s), resolved."""
    plan = plan_gemv(x2, as_words(qdata), unit_stride(scale), unit_stride(bias), bits, block_size, config, True,
                     glu=glu)
    return functools.partial(_gemv_launches, plan, bits)


# The tensor-core families whose calls are resolved: their plan_for and launch, and the FWHT's order for them (the
# positions per word it permutes; 0: K order, bfloat16). The warp-specialized kernel and dequantize + cuBLAS are not.
_TENSOR_CORE = {
    "tc": (plan_tc, launch_split_plan, 0),
    "wgmma": (plan_wgmma, launch_split_plan, 8),
    "wsrs": (plan_rs, launch_rs, 8),
}


def _tensor_core_resolved(x2, qdata, scale, bias, bits, block_size, config, dependent) -> _RotatedLaunches:
    """The launches of a tensor-core call (a :data:`_TENSOR_CORE` family) on unpadded activations, resolved: the FWHT
    rotating them as the kernel reads them, as :func:`_tensor_core_linear` asks it to, then the kernel."""
    family = config.get("kernel", "wgmma")
    plan_for_family, launch, per_word = _TENSOR_CORE[family]
    dtype = _compute_dtype(x2.dtype) if per_word else torch.bfloat16
    span = activation_span(config) if family == "wsrs" else None
    rotation = plan_fwht(x2, block_size, per_word, span, dependent)
    plan = plan_for_family(x2.shape, dtype, x2.device, as_words(qdata), unit_stride(scale), unit_stride(bias),
                           bits, block_size, config, dependent)
    return _RotatedLaunches(rotation, _RotationKey(dtype, per_word, span, dependent), launch, plan,
                            standard_codebook(bits, x2.device))


def linear_siblings(x: torch.Tensor, weights: list[tuple], bits: int, block_size: int, K: int) -> list[torch.Tensor]:
    """``[linear(x, qdata, scale, bias, bits, block_size, K, codebook) for ... in weights]`` for ``(qdata, scale,
    bias, codebook)`` weights on one input, with one FWHT launch for the calls that read the same rotated
    activations: those resolved to a tensor-core kernel behind the FWHT (:func:`_tensor_core_resolved`) with the same
    ``rotation_key``. A call not resolved so is :func:`linear`'s (which resolves it for the next one, where it can).

    At M > 1 each tensor-core call rotates its input itself: a layer's q, k and v, or its gate and up, rotated it
    two or three times (``benchmarks/RESULTS.md`` 61c)."""
    outs, rotated, x2 = [], {}, None
    for q, s, b, c in weights:
        entry = None
        if x.numel() <= tuning.WSRS_MAX_M * K:  # (as linear() resolves calls)
            entry = _RESOLVED.get(_signature(x, q, s, b, bits, block_size, K, c))
        if entry is None or not isinstance(entry.run, _RotatedLaunches) or not entry.current():
            outs.append(linear(x, q, s, b, bits, block_size, K, c))
            continue
        if x2 is None:
            x2 = x.reshape(-1, K)
            x2 = x2.contiguous() if entry.copy_x else x2
        key = entry.run.rotation_key
        if key not in rotated:
            rotated[key] = entry.run.rotate(x2)
        y = entry.run.multiply(rotated[key], q, s, b, x.dtype)
        outs.append(y.reshape(*x.shape[:-1], entry.N))
    return outs


def linear_group(x: torch.Tensor, weights: list[tuple], bits: int, block_size: int, K: int) -> torch.Tensor:
    """``torch.cat([linear(x, qdata, scale, bias, bits, block_size, K, codebook) for ... in weights], -1)`` for
    ``(qdata, scale, bias, codebook)`` weights of one width: one GEMV launch for two or three weights
    (:func:`.gemv.gemv_group`) where each one's call would run the GEMV rotating the activations itself, else each
    weight's own :func:`linear`. The one launch's call signature is resolved once, as :func:`linear`'s are.

    The tuner keys the group's config as one weight of all their rows (for a layer's q, k and v of Llama-3-8B:
    6144 x 4096), and tunes it on their rows stacked (a copy made for the tuning only).
    """
    signature = None
    if group_serves(x.numel() // K):  # (elsewhere each weight's call: nothing to resolve here)
        signature = _group_signature(x, weights, bits, block_size, K)
        entry = _RESOLVED.get(signature)
        if entry is not None and entry.current():
            return entry(x, weights)
    x2 = x.reshape(-1, K)
    copy_x = x2.stride(-1) != 1
    x2 = x2.contiguous() if copy_x else x2  # (as the GEMV reads it)
    config = _group_config(x2, weights, bits, block_size)
    if config is None:
        return torch.cat([linear(x, q, s, b, bits, block_size, K, c) for q, s, b, c in weights], dim=-1)
    plan = group_plan(x2, weights, bits, block_size, config)
    y = launch_group(plan, bits, x2, weights, x.dtype)
    if signature is not None:
        _resolve(signature, "gemv", config, lambda: functools.partial(launch_group, plan, bits), x2, y.shape[1],
                 weights[0][1].shape[1] * block_size, bits, K, copy_x)
    return y.reshape(*x.shape[:-1], y.shape[1])


def _group_signature(x, weights, bits, block_size, K) -> tuple:
    """:func:`_signature` for :func:`linear_group`: each weight's codes', scales' and bias's layout and whether it
    has its own codebook, in place of one weight's (all the GEMV's plan reads). Without the codes' alignment, which
    only the tensor-core families' choice reads (the GEMV's launch picks its binary by each pointer's alignment, call
    by call)."""
    layouts = tuple((q.shape, q.stride(), s.shape, s.stride(), None if b is None else (b.stride(), b.dtype), c is None)
                    for q, s, b, c in weights)
    return ("group", x.shape, x.stride(), x.dtype, x.device, layouts, bits, block_size, K,
            os.environ.get("HLWQ_PATH"), common.pdl_requested())


def rms_norm(h: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool = False) -> torch.Tensor:
    """Transformers' RMSNorm of ``h``, the mean of squares in float32: Llama's form (Qwen3's, Mistral's), ``weight *
    normed.to(h.dtype)``, or with ``unit_offset`` Qwen3.5's (Qwen3-Next's, Gemma 1-3's), ``(normed * (1 + weight)).to(
    h.dtype)`` in float32."""
    f = h.float()
    normed = f * torch.rsqrt(f.pow(2).mean(-1, keepdim=True) + eps)
    if unit_offset:
        return (normed * (1.0 + weight.float())).type_as(h)
    return weight * normed.to(h.dtype)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                 unit_offset: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rms_norm(x + residual, weight, eps, unit_offset), x + residual)``."""
    h = x + residual
    return rms_norm(h, weight, eps, unit_offset), h


def linear_group_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, weights: list[tuple],
                      bits: int, block_size: int, K: int,
                      unit_offset: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``normed, h = add_rms_norm(x, residual, weight, eps, unit_offset)``, then ``(linear_group(normed, weights,
    ...), h)``: a decoder layer's residual add and RMSNorm before its grouped projections (what
    :func:`hlwq_ops.grouping.fuse_norm_into_group` hands it).

    Where :func:`linear_group` runs one GEMV launch (decode sizes), the kernel adds, normalizes and stores ``h`` in
    its prologue: no kernel of their own before it. Elsewhere they are computed first. The GEMV's config is the
    group's (the same tuning key); the call's signature is resolved once, as :func:`linear_group`'s is. The caller
    checks the operands (``hlwq.linear_group_norm``'s checks: the residual as ``x``, the weight (K,), both of x's
    dtype).
    """
    signature = None
    if group_serves(x.numel() // K):
        signature = ("norm", residual.shape, residual.stride(), residual.dtype, weight.dtype, weight.stride(),
                     float(eps), bool(unit_offset), *_group_signature(x, weights, bits, block_size, K))
        entry = _RESOLVED.get(signature)
        if entry is not None and entry.current():
            h = torch.empty(x.shape, dtype=x.dtype, device=x.device)
            return entry(x, residual.reshape(-1, K), weight, h.view(-1, K), weights), h
    x2, r2 = x.reshape(-1, K), residual.reshape(-1, K)
    config = None
    if x2.stride(-1) == 1 and r2.stride(-1) == 1 and weight.stride(-1) == 1:  # (as the GEMV reads them)
        config = _group_config(x2, weights, bits, block_size)
    if config is None:
        normed, h = add_rms_norm(x, residual, weight, eps, unit_offset)
        return linear_group(normed, weights, bits, block_size, K), h.contiguous()  # (as the kernel's)
    plan = group_plan(x2, weights, bits, block_size, config, norm=(float(eps), r2.stride(0), bool(unit_offset)))
    h = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    y = launch_group(plan, bits, x2, weights, x.dtype, (r2, weight, h.view(-1, K)))
    if signature is not None:
        _resolve(signature, "gemv", config, lambda: functools.partial(_launch_group_norm, plan, bits), x2, y.shape[1],
                 weights[0][1].shape[1] * block_size, bits, K, False)
    return y.reshape(*x.shape[:-1], y.shape[1]), h


def _launch_group_norm(plan, bits, x2, r2, weight, h2, weights, out_dtype) -> torch.Tensor:
    """A resolved :func:`linear_group_norm` call's launch (``h2``: its (M, K) output for the rows plus residual)."""
    return launch_group(plan, bits, x2, weights, out_dtype, (r2, weight, h2))


def silu_and_mul(x: torch.Tensor, K: int) -> torch.Tensor:
    """``silu(gate) * up`` of ``x``'s two halves along its last dim (``K`` each), in ``x``'s dtype."""
    return F.silu(x[..., :K]) * x[..., K:]


def linear_glu(x: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
               block_size: int, K: int, codebook: torch.Tensor | None) -> torch.Tensor:
    """``linear(silu_and_mul(x, K), qdata, ...)``: a gated MLP's down projection on (..., 2 K) activations, its gate
    and up projections' outputs side by side (what :func:`hlwq_ops.grouping.fuse_gated_down` hands it).

    Where the call runs the GEMV rotating the activations in the kernel (decode sizes), the kernel multiplies the two
    halves in its prologue: no kernel of their own before it, no (M, K) product in memory. Elsewhere the product is
    computed first. The GEMV's config is the tuner's for the same weight without the gate (the key of
    :func:`linear`'s call), tuned on the gate half if not yet tuned; the call's signature is resolved once, as
    :func:`linear`'s are.
    """
    signature = None
    if x.numel() <= 2 * tuning.WSRS_MAX_M * K:  # (as linear() resolves calls)
        signature = ("glu", *_signature(x, qdata, scale, bias, bits, block_size, K, codebook))
        resolved = _RESOLVED.get(signature)
        if resolved is not None and resolved.current():
            return resolved(x, qdata, scale, bias, codebook)
    x2 = x.reshape(-1, 2 * K)
    copy_x = x2.stride(-1) != 1
    x2 = x2.contiguous() if copy_x else x2  # (as the GEMV reads it)
    config = _glu_config(x2, qdata, scale, bias, bits, block_size, K, codebook)
    if config is None:
        return linear(silu_and_mul(x, K), qdata, scale, bias, bits, block_size, K, codebook)
    y = gemv(x2, qdata, scale, bias, bits, block_size, codebook, x.dtype, config, rotate=True, glu=True)
    if signature is not None:
        resolved = lambda: _gemv_resolved(x2, qdata, scale, bias, bits, block_size, config, glu=True)  # noqa: E731
        _resolve(signature, "gemv", config, resolved, x2, y.shape[1], scale.shape[1] * block_size, bits, 2 * K,
                 copy_x)
    return y.reshape(*x.shape[:-1], y.shape[1])


def _glu_config(x2: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
                block_size: int, K: int, codebook: torch.Tensor | None) -> dict | None:
    """The GEMV config of :func:`linear_glu`'s call on ``x2`` ((M, 2 K), unit stride along it), or None where
    :func:`linear`'s call on the product would not run the GEMV rotating in the kernel (or has nothing to do)."""
    M, N = x2.shape[0], qdata.shape[0]
    fast = supports(bits, block_size, codebook, x2.dtype)
    if M == 0 or N == 0 or tuning.path_for(M, fast, fast and _runs_ws(qdata, bits, block_size, codebook,
                                                                        x2.dtype)) != "gemv":
        return None
    run = _gemv_run(x2[:, :K], bias, bits, block_size, codebook, x2.dtype)  # (tuning: the GEMV on the gate half)
    config = tuning.config_for("gemv", M, N, scale.shape[1] * block_size, bits, (qdata, scale), run)
    return config if can_rotate(bits, block_size, config) else None


def group_serves(M: int) -> bool:
    """Whether :func:`linear_group` runs its weights in one GEMV at M activation rows on any device, as far as M
    decides (the layouts and the tuned config decide too): where the GEMV serves every layer without a tensor-core
    kernel competing, M = 1 (or every M where ``HLWQ_PATH=gemv``)."""
    return M >= 1 and tuning.path_for(M, True, True) == "gemv"


def _group_config(x2: torch.Tensor, weights: list[tuple], bits: int, block_size: int) -> dict | None:
    """The GEMV config of :func:`linear_group`'s one launch on ``x2`` ((M, K), unit stride along K), or None where
    the weights take their own calls: fewer than two or more than :data:`.gemv.MAX_GROUP`, of other layouts or bias
    dtypes (:func:`.gemv.gemv_group`), a weight without rows, or at an M where some weight's call would not run the
    GEMV rotating in the kernel."""
    M = x2.shape[0]
    layouts = {(q.shape[1], q.stride(), s.shape[1], s.stride(), None if b is None else b.dtype)
               for q, s, b, _ in weights}
    if not 2 <= len(weights) <= MAX_GROUP or len(layouts) > 1 or M == 0 or any(q.shape[0] == 0 for q, *_ in weights):
        return None
    for q, _, _, c in weights:
        fast = supports(bits, block_size, c, x2.dtype)
        if tuning.path_for(M, fast, fast and _runs_ws(q, bits, block_size, c, x2.dtype)) != "gemv":
            return None
    k_pad = weights[0][1].shape[1] * block_size
    rows = sum(q.shape[0] for q, _, _, _ in weights)

    def stacked():
        return torch.cat([q for q, _, _, _ in weights]), torch.cat([s for _, s, _, _ in weights])

    run = _gemv_run(x2, None, bits, block_size, None, x2.dtype)
    config = tuning.config_for("gemv", M, rows, k_pad, bits, stacked, run, x2.device)
    return config if can_rotate(bits, block_size, config) else None


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
    handed to :func:`linear_rotated`. A call's signature is resolved once (:func:`_resolve`) where it runs the GEMV
    rotating in the kernel, or the FWHT and a :data:`_TENSOR_CORE` kernel on unpadded activations.
    """
    signature = None
    # (Calls up to the largest resolved build a signature, ~2 us on a CPU, also those that then take a path not
    # resolved: the warp-specialized kernel, dequantize + cuBLAS. Larger calls skip it.)
    if x.numel() <= tuning.WSRS_MAX_M * K:
        signature = _signature(x, qdata, scale, bias, bits, block_size, K, codebook)
        resolved = _RESOLVED.get(signature)
        if resolved is not None and resolved.current():
            return resolved(x, qdata, scale, bias, codebook)
    lead, N = x.shape[:-1], qdata.shape[0]
    k_pad = scale.shape[1] * block_size
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    if M == 0 or N == 0:  # (nothing to compute; a GEMV plan needs rows)
        return x.new_empty((*lead, N))

    fast = supports(bits, block_size, codebook, x.dtype)
    ws = fast and _runs_ws(qdata, bits, block_size, codebook, x.dtype)
    path = tuning.path_for(M, fast, ws)
    if path == "mma" and fast:

        def activations(per_word, span=None, dependent=False):
            return _rotated(x2, k_pad, block_size, _compute_dtype(x.dtype) if per_word else torch.bfloat16, per_word,
                            span, dependent)

        dependent = launches_dependent(x.device)
        gemv_run, x2c = None, x2
        if tuning.gemv_competes(M, N, k_pad):
            x2c = x2 if x2.stride(-1) == 1 else x2.contiguous()  # (as the GEMV path below reads it)
            gemv_run = _gemv_run(x2c, bias, bits, block_size, codebook, x.dtype)
        y, kernel, config = _tensor_core_linear(activations, M, k_pad, qdata, scale, bias, bits, block_size, x.dtype,
                                                ws=ws, dependent=dependent, gemv_run=gemv_run)
        if signature is not None and config.get("kernel") == "gemv" and can_rotate(bits, block_size, config):
            resolved = lambda: _gemv_resolved(x2c, qdata, scale, bias, bits, block_size, config)  # noqa: E731
            _resolve(signature, kernel, config, resolved, x2c, N, k_pad, bits, K, x2c is not x2)
        elif (signature is not None and config.get("kernel", "wgmma") in _TENSOR_CORE and k_pad == K
                and block_size <= MAX_KERNEL_BLOCK):  # (what _rotated gives the FWHT kernel to rotate)
            resolved = lambda: _tensor_core_resolved(x2, qdata, scale, bias, bits, block_size, config,  # noqa: E731
                                                     dependent)
            _resolve(signature, kernel, config, resolved, x2, N, k_pad, bits, K, not x2.is_contiguous())
    elif path == "gemv":
        copy_x = x2.stride(-1) != 1
        x2 = x2.contiguous() if copy_x else x2
        run = _gemv_run(x2, bias, bits, block_size, codebook, x.dtype)
        config = tuning.config_for("gemv", M, N, k_pad, bits, (qdata, scale), run)
        y = run(config, qdata, scale)
        if signature is not None and can_rotate(bits, block_size, config):
            resolved = lambda: _gemv_resolved(x2, qdata, scale, bias, bits, block_size, config)  # noqa: E731
            _resolve(signature, "gemv", config, resolved, x2, N, k_pad, bits, K, copy_x)
    else:  # the general tensor-core kernel reads float32 activations, cuBLAS 16-bit ones (_compute_dtype)
        xr = _rotated(x2, k_pad, block_size, torch.float32 if path == "mma" else _compute_dtype(x.dtype))
        y = linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, x.dtype)
    return y.reshape(*lead, N)
