"""The ``hlwq`` custom ops: schemas, fake (meta) implementations, dispatch.

This is the only module that touches ``torch.library``.

=====================  =========================================================
``hlwq.fwht``          blockwise normalized Walsh-Hadamard transform (autograd:
                       it is its own transpose), optionally casting the result
``hlwq.quantize``      (N, K) weight -> packed codes + float16 block scales
``hlwq.dequantize``    packed codes + scales -> (N, K) weight
``hlwq.linear_rotated``  ``y = xr @ Wr.T + bias`` on rotated, padded activations
``hlwq.linear``        ``y = x @ W_hat.T + bias`` on raw activations: pad,
                       rotate, then the rotated-domain product
``hlwq.linear_inference``  ``hlwq.linear`` without autograd, for calls that
                       record no gradient (cheaper through the dispatcher)
``hlwq.linear_group``  ``hlwq.linear_inference`` of several weights on one
                       input, their outputs side by side: one GEMV launch at
                       decode sizes (what :mod:`hlwq_ops.grouping` compiles in)
``hlwq.linear_group_norm``  a residual add and RMSNorm, then ``hlwq.linear_group``
                       on the norm (and the sum): the add and norm in the
                       GEMV's prologue at decode sizes
``hlwq.linear_siblings``  ``hlwq.linear_inference`` of several weights on one
                       input, one output each: the activations rotated once
                       for the tensor-core kernels that read them alike
``hlwq.linear_glu``    ``hlwq.linear_inference`` of ``silu(gate) * up`` on the
                       two halves of one input (a gated MLP's down projection
                       on its gate and up outputs side by side): the product
                       in the GEMV's prologue at decode sizes
``hlwq.linear_compiled``  ``hlwq.linear_inference`` as compiled graphs call it
                       with ``HLWQ_COMPILED_GEMV=1``: a ``triton_op`` whose
                       decode-size GEMV Inductor launches itself (experimental)
=====================  =========================================================

All but ``linear_compiled`` are opaque ``custom_op``s (``linear_inference`` is defined through
``torch.library.Library``, to have no autograd kernel; see its section): the
CPU implementations are plain torch (the
reference math of :mod:`hlwq_ops.format`); the CUDA implementations of
``fwht``, ``dequantize``, ``linear_rotated``, ``linear``, ``linear_inference``, ``linear_group``,
``linear_group_norm``, ``linear_siblings`` and ``linear_glu`` are the Triton kernels of :mod:`hlwq_ops.kernels`
(``quantize`` runs the same vectorized torch code on either device). ``hlwq.linear`` is one op, not ``fwht`` followed by
``linear_rotated``, because at decode sizes its GEMV rotates the activations
itself: one kernel per projection, no rotated copy in memory. Every
real implementation runs the same shape and dtype checks as its fake one.

Opaque ``custom_op`` rather than ``triton_op``: the CUDA implementation picks
a kernel family and a tuned configuration from the runtime M, which an
Inductor-traced ``triton_op`` would turn into shape guards and recompiles, and
Inductor has nothing to fuse into these kernels. ``linear_compiled`` is the
exception for the one case where M is known while compiling (the decode GEMV):
there the gain is the per-call host time of an opaque op (see its section).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from torch.library import wrap_triton
from torch.utils._python_dispatch import _disable_current_modes

from . import format as fmt
from . import kernels
from .codebook import lloyd_max_gaussian
from .kernels.gemv import _gemv_kernel, unused_members, unused_norm
from .hadamard import check_block_size, fwht_ref

__all__ = ["fwht", "quantize", "dequantize", "linear_rotated", "linear", "linear_call"]

Tensor = torch.Tensor


# ---------------------------------------------------------------------------
# Checks (shared by real and fake implementations).
# ---------------------------------------------------------------------------


def _check_out_dtype(out_dtype: torch.dtype | None) -> None:
    if out_dtype is not None and out_dtype not in fmt.ACTIVATION_DTYPES:
        raise TypeError(f"out_dtype must be one of {fmt.ACTIVATION_DTYPES}, got {out_dtype}")


def _check_weight_dtype(dtype: torch.dtype) -> None:
    """A dequantized weight's dtype (an integer or bool one would truncate the weight)."""
    if dtype not in fmt.WEIGHT_DTYPES:
        raise TypeError(f"dtype must be one of {fmt.WEIGHT_DTYPES}, got {dtype}")


def _check_fwht(x: Tensor, block_size: int, out_dtype: torch.dtype | None) -> None:
    check_block_size(block_size)
    _check_out_dtype(out_dtype)
    if x.dtype not in fmt.ACTIVATION_DTYPES:
        raise TypeError(f"x dtype must be one of {fmt.ACTIVATION_DTYPES}, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] % block_size:
        raise ValueError(
            f"x has last dim {x.shape[-1] if x.dim() else None}, expected a multiple of block_size={block_size}"
        )


def _check_linear_rotated(
    xr: Tensor,
    qdata: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    bits: int,
    block_size: int,
    codebook: Tensor | None,
    out_dtype: torch.dtype | None,
) -> int:
    """Validate the arguments of ``hlwq.linear_rotated``; return N."""
    check_block_size(block_size)
    _check_out_dtype(out_dtype)
    k_pad = scale.shape[-1] * block_size if scale.dim() == 2 else -1
    N = fmt.check_packed(qdata, scale, bits, block_size, max(k_pad, 1), codebook)
    fmt.check_activation(xr, k_pad, what="xr (rotated, padded x)")
    if xr.device != qdata.device:
        raise ValueError(f"xr is on {xr.device}, qdata is on {qdata.device}")
    _check_bias(bias, N, qdata.device)
    return N


def _check_bias(bias: Tensor | None, N: int, device: torch.device) -> None:
    if bias is None:
        return
    if bias.dim() != 1 or bias.shape[0] != N:
        raise ValueError(f"bias must have shape ({N},), got {tuple(bias.shape)}")
    if bias.dtype not in fmt.ACTIVATION_DTYPES:
        raise TypeError(f"bias dtype must be one of {fmt.ACTIVATION_DTYPES}, got {bias.dtype}")
    if bias.device != device:
        raise ValueError(f"bias is on {bias.device}, qdata is on {device}")


# ---------------------------------------------------------------------------
# hlwq.fwht
# ---------------------------------------------------------------------------


@torch.library.custom_op("hlwq::fwht", mutates_args=(), device_types="cpu")
def fwht(x: Tensor, block_size: int = 128, out_dtype: torch.dtype | None = None) -> Tensor:
    """Blockwise normalized Walsh-Hadamard transform of the last dim.

    Equivalent to ``(x.view(..., K // B, B) @ hadamard_matrix(B)).view(..., K)``
    in float32 math.

    Args:
        x: (..., K), K a multiple of ``block_size``; float16, bfloat16 or float32.
        block_size: B, a power of two in 32..1024.
        out_dtype: dtype of the result (default: the dtype of ``x``).

    Returns:
        (..., K)
    """
    _check_fwht(x, block_size, out_dtype)
    return fwht_ref(x.to(torch.float32), block_size).to(out_dtype or x.dtype)


@fwht.register_kernel("cuda")
def _fwht_cuda(x: Tensor, block_size: int = 128, out_dtype: torch.dtype | None = None) -> Tensor:
    _check_fwht(x, block_size, out_dtype)
    if block_size > kernels.MAX_KERNEL_BLOCK:
        return fwht_ref(x.to(torch.float32), block_size).to(out_dtype or x.dtype)
    return kernels.fwht(x, block_size, out_dtype or x.dtype)


@fwht.register_fake
def _fwht_fake(x: Tensor, block_size: int = 128, out_dtype: torch.dtype | None = None) -> Tensor:
    _check_fwht(x, block_size, out_dtype)
    return x.new_empty(x.shape, dtype=out_dtype or x.dtype)  # contiguous, as both implementations return


def _fwht_setup_context(ctx, inputs, output) -> None:
    ctx.block_size = inputs[1]
    ctx.in_dtype = inputs[0].dtype


def _fwht_backward(ctx, grad: Tensor):
    # The normalized Hadamard is symmetric and orthonormal: J^T = J.
    return fwht(grad, ctx.block_size, ctx.in_dtype), None, None


fwht.register_autograd(_fwht_backward, setup_context=_fwht_setup_context)


# ---------------------------------------------------------------------------
# hlwq.quantize / hlwq.dequantize
# ---------------------------------------------------------------------------


@torch.library.custom_op("hlwq::quantize", mutates_args=())
def quantize(
    w: Tensor, bits: int, block_size: int = 128, codebook: Tensor | None = None, scale_mode: str = "search"
) -> tuple[Tensor, Tensor]:
    """Quantize an (N, K) weight; see :func:`hlwq_ops.format.quantize_ref`.

    Runs vectorized on the weight's device (the GPU for a CUDA weight).

    Returns:
        qdata (N, n_blocks * B * bits / 8) uint8, scale (N, n_blocks) float16.
    """
    return fmt.quantize_ref(w, bits, block_size, codebook, scale_mode)


@quantize.register_fake
def _quantize_fake(w, bits, block_size=128, codebook=None, scale_mode="search"):
    fmt.check_weight(w)
    fmt.check_bits(bits)
    check_block_size(block_size)
    fmt.check_scale_mode(scale_mode)
    fmt.check_codebook(codebook, bits, w.device)
    q_shape, s_shape = fmt.packed_shapes(w.shape[0], w.shape[1], bits, block_size)
    return w.new_empty(q_shape, dtype=torch.uint8), w.new_empty(s_shape, dtype=torch.float16)


@torch.library.custom_op("hlwq::dequantize", mutates_args=())
def dequantize(
    qdata: Tensor,
    scale: Tensor,
    bits: int,
    block_size: int,
    K: int,
    dtype: torch.dtype = torch.float32,
    codebook: Tensor | None = None,
) -> Tensor:
    """Reconstruct the (N, K) weight ``w_hat`` in ``dtype``."""
    _check_weight_dtype(dtype)
    fmt.check_packed(qdata, scale, bits, block_size, K, codebook)
    return fmt.dequantize_ref(qdata, scale, bits, block_size, K, dtype, codebook)


@dequantize.register_kernel("cuda")
def _dequantize_cuda(qdata, scale, bits, block_size, K, dtype=torch.float32, codebook=None):
    _check_weight_dtype(dtype)
    fmt.check_packed(qdata, scale, bits, block_size, K, codebook)
    wr = kernels.dequantize_rotated(qdata, scale, bits, block_size, codebook, torch.float32)
    return fwht(wr, block_size)[:, :K].to(dtype).contiguous()


@dequantize.register_fake
def _dequantize_fake(qdata, scale, bits, block_size, K, dtype=torch.float32, codebook=None):
    _check_weight_dtype(dtype)
    N = fmt.check_packed(qdata, scale, bits, block_size, K, codebook)
    return qdata.new_empty((N, K), dtype=dtype)


# ---------------------------------------------------------------------------
# hlwq.linear_rotated
# ---------------------------------------------------------------------------


@torch.library.custom_op("hlwq::linear_rotated", mutates_args=(), device_types="cpu")
def linear_rotated(
    xr: Tensor,
    qdata: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    bits: int,
    block_size: int,
    codebook: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``y = xr @ Wr.T + bias`` with ``Wr`` the rotated-domain weight.

    Args:
        xr: (..., K_pad) activations already rotated by ``hlwq.fwht`` (and
            zero-padded to whole blocks before the rotation).
        out_dtype: dtype of ``y`` (default: the dtype of ``xr``).

    Returns:
        (..., N)
    """
    _check_linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, out_dtype)
    return fmt.linear_rotated_ref(xr, qdata, scale, bias, bits, block_size, codebook, out_dtype)


@linear_rotated.register_kernel("cuda")
def _linear_rotated_cuda(xr, qdata, scale, bias, bits, block_size, codebook=None, out_dtype=None):
    _check_linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, out_dtype)
    return kernels.linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, out_dtype or xr.dtype)


@linear_rotated.register_fake
def _linear_rotated_fake(xr, qdata, scale, bias, bits, block_size, codebook=None, out_dtype=None):
    N = _check_linear_rotated(xr, qdata, scale, bias, bits, block_size, codebook, out_dtype)
    return xr.new_empty((*xr.shape[:-1], N), dtype=out_dtype or xr.dtype)


def _linear_rotated_setup_context(ctx, inputs, output) -> None:
    xr, qdata, scale, bias, bits, block_size, codebook, _ = inputs
    ctx.save_for_backward(qdata, scale, codebook)
    ctx.meta = (bits, block_size, xr.dtype, bias is not None and bias.requires_grad)


def _rows(t: Tensor) -> Tensor:
    """``t`` as (rows, t.shape[-1]); unlike ``reshape(-1, n)``, also when it has no elements."""
    n = t.shape[-1]
    return t.reshape(t.numel() // n if n else math.prod(t.shape[:-1]), n)


def _linear_rotated_backward(ctx, grad: Tensor):
    qdata, scale, codebook = ctx.saved_tensors
    bits, block_size, dtype, bias_grad = ctx.meta
    # Wr = W_hat @ H blockwise, so grad_xr = grad @ Wr = fwht(grad @ W_hat).
    k_pad = scale.shape[1] * block_size
    # in float32, rounded once to xr's dtype (a 16-bit grad of a float32 xr would round, and overflow, twice)
    w_hat = dequantize(qdata, scale, bits, block_size, k_pad, torch.float32, codebook)
    grad_xr = fwht(grad.float() @ w_hat, block_size, dtype)
    grad_bias = _rows(grad).sum(0) if bias_grad else None
    return grad_xr, None, None, grad_bias, None, None, None, None


linear_rotated.register_autograd(_linear_rotated_backward, setup_context=_linear_rotated_setup_context)


# ---------------------------------------------------------------------------
# hlwq.linear
# ---------------------------------------------------------------------------


def _check_linear(x, qdata, scale, bias, bits, block_size, K, codebook) -> int:
    """Validate the arguments of ``hlwq.linear``; return N."""
    N = fmt.check_packed(qdata, scale, bits, block_size, K, codebook)
    fmt.check_activation(x, K)
    if x.device != qdata.device:
        raise ValueError(f"x is on {x.device}, qdata is on {qdata.device}")
    _check_bias(bias, N, qdata.device)
    return N


@torch.library.custom_op("hlwq::linear", mutates_args=(), device_types="cpu")
def linear(
    x: Tensor,
    qdata: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    bits: int,
    block_size: int,
    K: int,
    codebook: Tensor | None = None,
) -> Tensor:
    """``y = x @ W_hat.T + bias`` for an HLWQ weight (``torch.ops.hlwq.linear``).

    Pads ``x`` to whole blocks, rotates it (float32) and multiplies it with the
    rotated-domain weight. On CUDA the small-M GEMV does the padding and the
    rotation itself (one kernel); larger M run ``hlwq.fwht``'s kernel, then the
    tensor-core or dequantize + cuBLAS path.

    Args:
        x: (..., K) float16, bfloat16 or float32.
        qdata, scale: the packed weight (see :mod:`hlwq_ops.format`).
        bias: (N,) or None.
        K: in_features of the weight (before padding).

    Returns:
        (..., N), the dtype of ``x``.
    """
    return _linear_cpu(x, qdata, scale, bias, bits, block_size, K, codebook)


def _linear_cpu(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    N = _check_linear(x, qdata, scale, bias, bits, block_size, K, codebook)
    if x.numel() == 0:
        return x.new_empty((*x.shape[:-1], N))
    k_pad = scale.shape[1] * block_size
    xr = fwht_ref(F.pad(x.float(), (0, k_pad - K)), block_size)
    return fmt.linear_rotated_ref(xr, qdata, scale, bias, bits, block_size, codebook).to(x.dtype)


@linear.register_kernel("cuda")
def _linear_cuda(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    _check_linear(x, qdata, scale, bias, bits, block_size, K, codebook)
    return kernels.linear(x, qdata, scale, bias, bits, block_size, K, codebook)


@linear.register_fake
def _linear_fake(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    N = _check_linear(x, qdata, scale, bias, bits, block_size, K, codebook)
    return x.new_empty((*x.shape[:-1], N))


def _linear_setup_context(ctx, inputs, output) -> None:
    x, qdata, scale, bias, bits, block_size, K, codebook = inputs
    ctx.save_for_backward(qdata, scale, codebook)
    ctx.meta = (bits, block_size, K, bias is not None and bias.requires_grad)


def _linear_backward(ctx, grad: Tensor):
    qdata, scale, codebook = ctx.saved_tensors
    bits, block_size, K, bias_grad = ctx.meta
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = grad @ dequantize(qdata, scale, bits, block_size, K, grad.dtype, codebook)
    grad_bias = _rows(grad).sum(0) if bias_grad else None
    return grad_x, None, None, grad_bias, None, None, None, None


linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


# ---------------------------------------------------------------------------
# hlwq.linear_inference: hlwq.linear where no gradient is recorded
# ---------------------------------------------------------------------------

# ``hlwq.linear`` without an autograd kernel. A ``custom_op``'s autograd kernel is Python: every call through the
# dispatcher pays it (~7 us of a ~13 us call on the CPU, ~18 us on the H200 machine; also under ``no_grad``), and a
# compiled graph without CUDA graphs (``torch.compile``'s default mode) calls the op through the dispatcher once
# per projection and call -- 224 times a decode step of an 8B model. :func:`linear_call` picks this op where
# nothing needs a gradient; with a gradient to record it picks ``hlwq.linear``, whose backward is registered. The
# same implementations and fake. A direct call with inputs that require grad gets torch's autograd fallback, which
# warns at backward (the CUDA kernels record nothing).
_LIB = torch.library.Library("hlwq", "FRAGMENT")
_LIB.define(
    "linear_inference(Tensor x, Tensor qdata, Tensor scale, Tensor? bias, SymInt bits, SymInt block_size, "
    "SymInt K, Tensor? codebook=None) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),  # as custom_op tags hlwq.linear
)
_LIB.impl("linear_inference", _linear_cpu, "CPU")
_LIB.impl("linear_inference", _linear_cuda, "CUDA")
torch.library.register_fake("hlwq::linear_inference", _linear_fake, lib=_LIB)


# ---------------------------------------------------------------------------
# hlwq.linear_group: several weights' hlwq.linear_inference on one input
# ---------------------------------------------------------------------------

# What :class:`hlwq_ops.grouping.GroupProjections` puts in a compiled graph in place of the calls of one input's
# sibling projections (a layer's q, k and v; gate and up): their outputs side by side, from one GEMV launch at decode
# sizes (``kernels.linear_group``). Defined as ``linear_inference`` is (no autograd kernel): the pass makes it from
# those calls only.
_LIB.define(
    "linear_group(Tensor x, Tensor[] qdata, Tensor[] scale, Tensor?[] bias, SymInt bits, SymInt block_size, "
    "SymInt K, Tensor?[] codebook) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)


def _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook, op="linear_group") -> list[int]:
    """Validate the arguments of ``hlwq.linear_group`` (or ``op``'s: ``linear_siblings``), each weight's as
    ``hlwq.linear``'s; return each one's N."""
    lengths = [len(qdata), len(scale), len(bias), len(codebook)]
    if not qdata or len(set(lengths)) > 1:
        raise ValueError(f"hlwq.{op} takes one qdata, scale, bias and codebook (None where absent) per weight, "
                         f"at least one weight; got lists of {lengths[0]}, {lengths[1]}, {lengths[2]} and {lengths[3]}")
    return [_check_linear(x, q, s, b, bits, block_size, K, c) for q, s, b, c in zip(qdata, scale, bias, codebook)]


def _linear_group_cpu(x, qdata, scale, bias, bits, block_size, K, codebook):
    _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook)
    return torch.cat([_linear_cpu(x, q, s, b, bits, block_size, K, c)
                      for q, s, b, c in zip(qdata, scale, bias, codebook)], dim=-1)


def _linear_group_cuda(x, qdata, scale, bias, bits, block_size, K, codebook):
    _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook)
    return kernels.linear_group(x, list(zip(qdata, scale, bias, codebook)), bits, block_size, K)


def _linear_group_fake(x, qdata, scale, bias, bits, block_size, K, codebook):
    N = _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook)
    return x.new_empty((*x.shape[:-1], sum(N)))


_LIB.impl("linear_group", _linear_group_cpu, "CPU")
_LIB.impl("linear_group", _linear_group_cuda, "CUDA")
torch.library.register_fake("hlwq::linear_group", _linear_group_fake, lib=_LIB)


# ---------------------------------------------------------------------------
# hlwq.linear_group_norm: a residual add and RMSNorm, then hlwq.linear_group
# ---------------------------------------------------------------------------

# What :func:`hlwq_ops.grouping.fuse_norm_into_group` puts in a compiled graph in place of a decoder layer's residual
# add and RMSNorm (transformers' Llama form, or with ``unit_offset`` Qwen3.5's: ``kernels.rms_norm``) before a
# ``hlwq.linear_group`` call: the group's output on the norm of ``x + residual``, and that sum (which the layer's next
# residual add reads). At decode sizes the GEMV adds and normalizes in its prologue (``kernels.linear_group_norm``).
# Defined as ``linear_inference`` is (no autograd kernel): the pass makes it from such calls only.
_LIB.define(
    "linear_group_norm(Tensor x, Tensor residual, Tensor norm_weight, float eps, Tensor[] qdata, Tensor[] scale, "
    "Tensor?[] bias, SymInt bits, SymInt block_size, SymInt K, Tensor?[] codebook, bool unit_offset=False) "
    "-> (Tensor, Tensor)",
    tags=(torch.Tag.pt2_compliant_tag,),
)


def _check_linear_group_norm(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K,
                             codebook) -> list[int]:
    """Validate the arguments of ``hlwq.linear_group_norm`` (``residual`` as ``x``, ``norm_weight`` (K,), both of
    x's dtype; the weights as ``hlwq.linear_group``'s); return each weight's N."""
    if residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device:
        raise ValueError(f"hlwq.linear_group_norm takes a residual of x's shape, dtype and device "
                         f"({tuple(x.shape)}, {x.dtype}, {x.device}); got {tuple(residual.shape)}, {residual.dtype}, "
                         f"{residual.device}")
    if norm_weight.shape != (K,) or norm_weight.dtype != x.dtype or norm_weight.device != x.device:
        raise ValueError(f"hlwq.linear_group_norm takes a norm weight of shape ({K},) in x's dtype {x.dtype} on "
                         f"{x.device}; got {tuple(norm_weight.shape)}, {norm_weight.dtype}, {norm_weight.device}")
    if not eps >= 0:
        raise ValueError(f"hlwq.linear_group_norm takes eps >= 0, got {eps}")
    return _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook, "linear_group_norm")


def _linear_group_norm_cpu(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook,
                           unit_offset=False):
    _check_linear_group_norm(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook)
    normed, h = kernels.add_rms_norm(x, residual, norm_weight, eps, unit_offset)
    return _linear_group_cpu(normed, qdata, scale, bias, bits, block_size, K, codebook), h.contiguous()


def _linear_group_norm_cuda(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook,
                            unit_offset=False):
    _check_linear_group_norm(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook)
    return kernels.linear_group_norm(x, residual, norm_weight, eps, list(zip(qdata, scale, bias, codebook)), bits,
                                     block_size, K, unit_offset)


def _linear_group_norm_fake(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook,
                            unit_offset=False):
    N = _check_linear_group_norm(x, residual, norm_weight, eps, qdata, scale, bias, bits, block_size, K, codebook)
    return x.new_empty((*x.shape[:-1], sum(N))), x.new_empty(x.shape)


_LIB.impl("linear_group_norm", _linear_group_norm_cpu, "CPU")
_LIB.impl("linear_group_norm", _linear_group_norm_cuda, "CUDA")
torch.library.register_fake("hlwq::linear_group_norm", _linear_group_norm_fake, lib=_LIB)


# ---------------------------------------------------------------------------
# hlwq.linear_siblings: several weights' hlwq.linear_inference on one input, one output each
# ---------------------------------------------------------------------------

# What :class:`hlwq_ops.grouping.GroupProjections` puts in a compiled graph in place of the calls of one input's
# sibling projections past decode sizes of one row, where each weight's call runs its own kernel: their outputs one
# tensor each (no concatenation to copy), the activations rotated once for the calls that read the same rotation
# (``kernels.linear_siblings``). Defined as ``linear_inference`` is (no autograd kernel): the pass makes it from
# those calls only.
_LIB.define(
    "linear_siblings(Tensor x, Tensor[] qdata, Tensor[] scale, Tensor?[] bias, SymInt bits, SymInt block_size, "
    "SymInt K, Tensor?[] codebook) -> Tensor[]",
    tags=(torch.Tag.pt2_compliant_tag,),
)


def _linear_siblings_cpu(x, qdata, scale, bias, bits, block_size, K, codebook):
    _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook, "linear_siblings")
    return [_linear_cpu(x, q, s, b, bits, block_size, K, c) for q, s, b, c in zip(qdata, scale, bias, codebook)]


def _linear_siblings_cuda(x, qdata, scale, bias, bits, block_size, K, codebook):
    _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook, "linear_siblings")
    return kernels.linear_siblings(x, list(zip(qdata, scale, bias, codebook)), bits, block_size, K)


def _linear_siblings_fake(x, qdata, scale, bias, bits, block_size, K, codebook):
    N = _check_linear_group(x, qdata, scale, bias, bits, block_size, K, codebook, "linear_siblings")
    return [x.new_empty((*x.shape[:-1], n)) for n in N]


_LIB.impl("linear_siblings", _linear_siblings_cpu, "CPU")
_LIB.impl("linear_siblings", _linear_siblings_cuda, "CUDA")
torch.library.register_fake("hlwq::linear_siblings", _linear_siblings_fake, lib=_LIB)


# ---------------------------------------------------------------------------
# hlwq.linear_glu: a gated MLP's down projection on its gate and up outputs side by side
# ---------------------------------------------------------------------------

# What :func:`hlwq_ops.grouping.fuse_gated_down` puts in a compiled graph in place of a down projection's call on
# ``silu(gate) * up`` where gate and up are the two column halves of one ``hlwq.linear_group`` call:
# ``hlwq.linear_inference`` of that product (rounded as eager's), which the GEMV computes in its prologue at decode
# sizes (``kernels.linear_glu``). Defined as ``linear_inference`` is (no autograd kernel): the pass makes it from such
# calls only.
_LIB.define(
    "linear_glu(Tensor x, Tensor qdata, Tensor scale, Tensor? bias, SymInt bits, SymInt block_size, SymInt K, "
    "Tensor? codebook=None) -> Tensor",
    tags=(torch.Tag.pt2_compliant_tag,),
)


def _check_linear_glu(x, qdata, scale, bias, bits, block_size, K, codebook) -> int:
    """Validate the arguments of ``hlwq.linear_glu`` (x: a gate and an up half of K each); return N."""
    if x.dim() < 1 or x.shape[-1] != 2 * K:
        raise ValueError(f"hlwq.linear_glu takes x of (..., 2 * K) = (..., {2 * K}), a gate and an up half of K = {K} "
                         f"each; got x of shape {tuple(x.shape)}")
    return _check_linear(x[..., :K], qdata, scale, bias, bits, block_size, K, codebook)


def _linear_glu_cpu(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    _check_linear_glu(x, qdata, scale, bias, bits, block_size, K, codebook)
    return _linear_cpu(kernels.silu_and_mul(x, K), qdata, scale, bias, bits, block_size, K, codebook)


def _linear_glu_cuda(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    _check_linear_glu(x, qdata, scale, bias, bits, block_size, K, codebook)
    return kernels.linear_glu(x, qdata, scale, bias, bits, block_size, K, codebook)


def _linear_glu_fake(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    N = _check_linear_glu(x, qdata, scale, bias, bits, block_size, K, codebook)
    return x.new_empty((*x.shape[:-1], N))


_LIB.impl("linear_glu", _linear_glu_cpu, "CPU")
_LIB.impl("linear_glu", _linear_glu_cuda, "CUDA")
torch.library.register_fake("hlwq::linear_glu", _linear_glu_fake, lib=_LIB)


# ---------------------------------------------------------------------------
# hlwq.linear_compiled: what a compiled graph calls, its GEMV launched by Inductor
# ---------------------------------------------------------------------------


@torch.library.triton_op("hlwq::linear_compiled", mutates_args=())
def linear_compiled(
    x: Tensor,
    qdata: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    bits: int,
    block_size: int,
    K: int,
    codebook: Tensor | None = None,
) -> Tensor:
    """``hlwq.linear_inference`` as ``torch.compile`` calls it: where the call runs the GEMV (decode sizes, a static
    M), Inductor sees the kernel and launches it from its own generated code; elsewhere it calls
    ``hlwq.linear_inference``.

    In ``torch.compile``'s default mode every opaque op call pays the dispatcher and this library's Python (~52 us a
    call on the H200 machine, ``benchmarks/RESULTS.md`` 37c): a decode step of an 8B model calls 224. A
    ``triton_op`` is traced instead: its Python runs once, while compiling, and the graph keeps the kernel launch.
    The op is called where AOTAutograd traces the HLWQTensor's linear, which takes no tensor made outside its trace:
    the standard codebook becomes a constant of the graph, and the split-K arrival counters a zeroed buffer of the
    call's own (the kernel leaves them zero).
    """
    N = _check_linear(x, qdata, scale, bias, bits, block_size, K, codebook)
    traced = kernels.compiled.traced_gemv(x, qdata, scale, bias, bits, block_size, K, codebook)
    if traced is None:
        return torch.ops.hlwq.linear_inference(x, qdata, scale, bias, bits, block_size, K, codebook)
    plan = traced.plan
    launch = plan.launch
    if launch.kernel is not _gemv_kernel:
        raise AssertionError("the traced GEMV's plan launches another kernel")
    # made here: a tensor of the device's caches would be one made outside the trace
    table = _standard_table(bits, x.device) if codebook is None else codebook.contiguous()
    out = x.new_empty(plan.out_shape)
    # unused pointers (no workspace, no split K) get ``out``: any tensor would do, and it needs no other buffer
    ws = out if plan.ws_shape is None else x.new_empty(plan.ws_shape, dtype=torch.float32)
    counters = out if not plan.counters else x.new_zeros(plan.counters, dtype=torch.int32)
    # (by its module name: the compile caches key the op on the kernels its source wraps by name)
    bias = table if traced.bias is None else traced.bias
    members = unused_members(qdata, traced.scale, table, bias)
    wrap_triton(_gemv_kernel)[launch.grid](
        traced.x, qdata, traced.scale, table, bias, out, ws, counters, *members, *unused_norm(traced.x, out),
        *launch.ints, **launch.constexprs, **launch.options)
    return out.view(*x.shape[:-1], N)


def _standard_table(bits: int, device: torch.device) -> Tensor:
    """The standard ``bits`` codebook as a new float32 tensor, also under a tracing mode (a constant of the trace):
    its values, if not yet cached, are solved with torch ops (Newton steps, ``.item()``) outside the modes."""
    with _disable_current_modes():
        values = lloyd_max_gaussian(bits)
    return torch.tensor(values, dtype=torch.float32, device=device)


def _linear_vmap_rule(op):
    """``torch.vmap``'s rule for ``op`` (``hlwq.linear`` or ``hlwq.linear_inference``).

    Batched activations are one call over the batch (the op takes any leading dims), with a batched bias added
    after it. A batched weight (``qdata``, ``scale`` or ``codebook``) is one call per batch element. Without a rule,
    functorch's fallback made one call per batch element every time (``torch.func.jacfwd`` through
    :class:`_LinearWithTangent`: one per input position).
    """

    def rule(info, in_dims, x, qdata, scale, bias, bits, block_size, K, codebook=None):
        x_dim, q_dim, s_dim, b_dim = in_dims[:4]
        c_dim = in_dims[7] if len(in_dims) > 7 else None
        B = info.batch_size
        if q_dim is not None or s_dim is not None or c_dim is not None:

            def item(t, dim, i):
                return t if t is None or dim is None else t.select(dim, i)

            return torch.stack([
                op(item(x, x_dim, i), item(qdata, q_dim, i), item(scale, s_dim, i), item(bias, b_dim, i), bits,
                   block_size, K, item(codebook, c_dim, i))
                for i in range(B)
            ]), 0
        if b_dim is not None:  # the op never sees a batched bias: its checks here
            _check_bias(bias.select(b_dim, 0), qdata.shape[0], qdata.device)
        # (1, ..., K) when only the bias is batched: the bias's batch broadcasts the output below
        x = x.movedim(x_dim, 0) if x_dim is not None else x.unsqueeze(0)
        y = op(x, qdata, scale, bias if b_dim is None else None, bits, block_size, K, codebook)
        if b_dim is not None:  # (B, N), broadcast over the activations' leading dims
            # added in float32 to the op's output, which is rounded to x's dtype; the op adds its own bias before
            # rounding, so in 16 bits the two differ by up to one rounding of the product before the bias
            b = bias.movedim(b_dim, 0).float()
            y = (y.float() + b.view(B, *([1] * (y.dim() - 2)), b.shape[-1])).to(y.dtype)
        return y, 0

    return rule


linear.register_vmap(_linear_vmap_rule(torch.ops.hlwq.linear.default))
torch.library.register_vmap("hlwq::linear_inference", _linear_vmap_rule(torch.ops.hlwq.linear_inference.default),
                            lib=_LIB)


def _records_grad(x: Tensor, bias: Tensor | None) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))


def _recorded_for_later() -> bool:
    """Whether the call is being recorded into a program that runs later, with inputs that may then need a
    gradient (``torch.jit.trace``, ``torch.export``): neither guards on ``requires_grad`` as ``torch.compile``
    does."""
    return torch._C._get_tracing_state() is not None or torch.compiler.is_exporting()


# ---------------------------------------------------------------------------
# Forward-mode AD: hlwq.linear with a tangent rule
# ---------------------------------------------------------------------------


class _LinearWithTangent(torch.autograd.Function):
    """``hlwq.linear`` with its forward-mode derivative as well as its backward.

    ``torch.library`` registers a backward for a custom op, not a tangent rule:
    through the ops alone, ``torch.func.jvp`` got a zero tangent and
    ``torch.autograd.forward_ad`` an error where ``x`` required grad.
    :func:`linear_call` runs this where a derivative may be asked through a
    ``forward_ad`` dual level or a ``torch.func`` transform
    (:func:`_differentiating_transform`). The tangent of
    ``x @ W_hat.T + bias`` is ``x_t @ W_hat.T + bias_t``: the same product, on
    the tangent. Like the backward, it gives ``scale`` and ``codebook`` no
    derivative: their tangents are ignored (the weight is frozen).
    """

    generate_vmap_rule = True  # (torch.func.jacfwd vmaps the tangent rule: the op's vmap rule, below)

    @staticmethod
    def forward(x, qdata, scale, bias, bits, block_size, K, codebook):
        return torch.ops.hlwq.linear_inference(x, qdata, scale, bias, bits, block_size, K, codebook)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _linear_setup_context(ctx, inputs, output)
        qdata, scale, codebook = inputs[1], inputs[2], inputs[7]
        ctx.save_for_forward(qdata, scale, codebook)

    @staticmethod
    def backward(ctx, grad):
        return _linear_backward(ctx, grad)

    @staticmethod
    def jvp(ctx, x_t, qdata_t, scale_t, bias_t, bits_t, block_size_t, K_t, codebook_t):
        # (x_t is zeros, not None, when only the bias has a tangent: autograd materializes it)
        qdata, scale, codebook = ctx.saved_tensors
        bits, block_size, K, _ = ctx.meta
        y_t = torch.ops.hlwq.linear_inference(x_t, qdata, scale, None, bits, block_size, K, codebook)
        return y_t if bias_t is None else (y_t + bias_t).to(y_t.dtype)


def _differentiating_transform() -> bool:
    """Whether a derivative may be asked of this call through a ``torch.autograd.forward_ad`` dual level (the
    module's own record of it) or a ``torch.func`` transform that differentiates (``grad``, ``vjp``, ``jvp`` and
    the ones built on them; ``vmap`` alone and ``functionalize`` call the ops as they are)."""
    if forward_ad._current_level >= 0:
        return True
    if not torch._C._are_functorch_transforms_active():
        return False
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return any(i.key() in (TransformType.Grad, TransformType.Jvp) for i in retrieve_all_functorch_interpreters())


def _compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call: dynamo, or AOTAutograd dispatching a tensor subclass's op on
    functional tensors (an HLWQTensor's linear is traced there only: dynamo passes ``__torch_dispatch__`` subclasses
    through whole, and on torch 2.11 ``torch.compiler.is_compiling()`` is False by then; 2.13 sets it)."""
    return torch.compiler.is_compiling() or torch._guards.TracingContext.try_get() is not None


def _plain_eager(x: Tensor, qdata: Tensor, bias: Tensor | None) -> bool:
    """Whether a call can be nothing but the op's CUDA implementation: plain CUDA tensors, no autograd
    to record, and nothing tracing, recording or intercepting ops (torch.compile, torch.jit.trace, the
    profiler, dispatch modes, functorch)."""
    return (
        not torch.compiler.is_compiling()
        and type(x) is torch.Tensor
        and type(qdata) is torch.Tensor
        and x.is_cuda
        and not _records_grad(x, bias)
        and torch._C._len_torch_dispatch_stack() == 0
        and not torch._C._are_functorch_transforms_active()
        and torch._C._get_tracing_state() is None
        and not torch.autograd._profiler_enabled()
        and forward_ad._current_level < 0
    )


def linear_call(x, qdata, scale, bias, bits, block_size, K, codebook=None) -> Tensor:
    """``torch.ops.hlwq.linear(...)``; a plain eager CUDA call runs its CUDA implementation directly.

    Going through the dispatcher costs an eager call 34-43 us of host time (the
    custom op's autograd wrapper, its dynamo guard and alias check; H200,
    ``benchmarks/RESULTS.md``), on top of the kernels' own launches: an 8B model's
    eager prefill or a ``generate()`` step without CUDA graphs pays it 224 times.
    Where something could observe the op (tracing, autograd, a dispatch mode) the
    op is called: ``hlwq.linear_inference`` where no gradient is recorded (a compiled
    inference graph; ``torch.compile`` recompiles when that changes), else
    ``hlwq.linear`` -- also in a program recorded by ``torch.jit.trace`` or
    ``torch.export``, which may later run with gradients. Where a derivative may be
    asked through a ``forward_ad`` dual level or a differentiating ``torch.func``
    transform (also one traced by ``torch.compile``): :class:`_LinearWithTangent`. The
    implementation and its checks are the same every way.
    """
    if _plain_eager(x, qdata, bias):
        return _linear_cuda(x, qdata, scale, bias, bits, block_size, K, codebook)
    if _differentiating_transform():  # (torch.compile traces the check: dynamo knows its transforms' stack)
        return _LinearWithTangent.apply(x, qdata, scale, bias, bits, block_size, K, codebook)
    if not _records_grad(x, bias) and not _recorded_for_later():
        # (opt-in: kernels.compiled; no functorch transform: the op has no vmap rule)
        if kernels.compiled.COMPILED_GEMV and _compiling() and not torch._C._are_functorch_transforms_active():
            return torch.ops.hlwq.linear_compiled(x, qdata, scale, bias, bits, block_size, K, codebook)
        return torch.ops.hlwq.linear_inference(x, qdata, scale, bias, bits, block_size, K, codebook)
    return linear(x, qdata, scale, bias, bits, block_size, K, codebook)
