"""Dequantize packed codes to the rotated-domain weight ``Wr = s / sqrt(B) * c[code]``.

The fallback path for large M (``xr @ Wr.T`` by cuBLAS, :func:`dequant_linear`)
and the first half of ``hlwq.dequantize`` (the inverse rotation follows). A
program decodes a ``[BN, 32 * G]`` tile in registers with the GEMV's decoding
(:func:`hlwq_ops.kernels.decode.decode_tile`) and stores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .common import as_words, kernel_codebook, planes, unit_stride
from .decode import decode_tile
from .launch import Launch, cdiv, plan_cache

__all__ = ["CHUNK_BYTES", "dequant_linear", "dequantize_rotated"]

# dequant_linear decodes at most about this many bytes of the weight (in x's dtype) at a time, in equal chunks.
# The transient is what a Llama-3-8B-shaped model's peak measures above bf16's (H200, benchmarks/RESULTS.md:
# decoded whole, the 117 MB of a 14336 x 4096 weight put the batch-1 peak at 42.4% of bf16's; in 64 MB chunks,
# 41.9%). The price, same run, against decoding whole: -4% to +10% at M = 128..2048 on the 14336 x 4096 and
# 4096 x 14336 weights (32 MB chunks: up to 21%).
CHUNK_BYTES = 64 << 20


@triton.jit
def _dequant_kernel(
    q_ptr,  # [N, K_PAD * BITS // 32] int32
    s_ptr,  # [N, K_PAD // B] float16
    c_ptr,  # [2**BITS] float32 codebook
    out_ptr,  # [N, K_PAD]
    N,
    K_PAD,
    stride_qn,
    stride_sn,
    stride_on,
    BITS: tl.constexpr,
    B: tl.constexpr,
    W0: tl.constexpr,
    O0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    step = tl.program_id(1)
    w = decode_tile(q_ptr, s_ptr, c_ptr, n, step, N, K_PAD, stride_qn, stride_sn, BITS, B, W0, W1, O1, W2, O2, G, WIDE,
                    INTERPRET)
    k = step * 32 * G + tl.arange(0, 32 * G)
    mask = (n[:, None] < N) & (k[None, :] < K_PAD)
    tl.store(out_ptr + n.to(tl.int64)[:, None] * stride_on + k[None, :], w.to(out_ptr.dtype.element_ty), mask=mask)


def dequantize_rotated(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, K_pad) rotated-domain weight in ``dtype``, written to ``out`` if given ((N, K_pad), unit stride along K)."""
    N = qdata.shape[0]
    k_pad = scale.shape[1] * block_size
    words = as_words(qdata)
    scale = unit_stride(scale)
    if out is None:
        out = torch.empty((N, k_pad), device=qdata.device, dtype=dtype)
    elif out.shape != (N, k_pad) or out.stride(1) != 1 or out.dtype != dtype or out.device != qdata.device:
        raise ValueError(
            f"out must be ({N}, {k_pad}) {dtype} on {qdata.device} with unit stride along K, got "
            f"{tuple(out.shape)} {out.dtype} on {out.device} with strides {out.stride()}"
        )
    _launch(N, k_pad, bits, block_size, words.stride(0), scale.stride(0), out.stride(0), words.numel() >= 2**31,
            qdata.device.type == "cpu")(words, scale, kernel_codebook(bits, codebook, qdata.device), out)
    return out


@plan_cache
def _launch(N: int, k_pad: int, bits: int, block_size: int, stride_qn: int, stride_sn: int, stride_on: int,
            wide: bool, interpret: bool) -> Launch:
    """:func:`dequantize_rotated`'s launch for this call signature: ``[32, 128]`` tiles, four warps."""
    bn, g = 32, 4
    return Launch(_dequant_kernel, (cdiv(N, bn), cdiv(k_pad, 32 * g)), (N, k_pad, stride_qn, stride_sn, stride_on),
                  dict(BITS=bits, B=block_size, WIDE=wide, INTERPRET=interpret, BN=bn, G=g, **planes(bits)),
                  dict(num_warps=4))


def dequant_linear(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """``x @ Wr.T + bias`` for (M, K_pad) rotated activations: dequantize, then cuBLAS; (M, N) in x's dtype.

    A weight larger than ``chunk_bytes`` (default :data:`CHUNK_BYTES`) in x's
    dtype is decoded in about equal chunks of rows (a multiple of 32, the last
    one shorter) into one reused buffer, each chunk multiplied into its columns
    of the output: the transient is bounded by the buffer instead of growing
    with the weight. No autograd (``out=``); the ops carry it.
    """
    M, k_pad = x.shape
    N = qdata.shape[0]
    budget = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    chunks = max(1, -(-N * k_pad * x.element_size() // max(budget, 1)))
    rows = -(-N // chunks // 32) * 32  # about equal chunks: no small last GEMM
    if rows >= N:
        wr = dequantize_rotated(qdata, scale, bits, block_size, codebook, x.dtype)
        return F.linear(x, wr, bias)
    y = torch.empty((M, N), device=x.device, dtype=x.dtype)
    buf = torch.empty((rows, k_pad), device=x.device, dtype=x.dtype)
    for n0 in range(0, N, rows):
        n1 = min(n0 + rows, N)
        wr = dequantize_rotated(qdata[n0:n1], scale[n0:n1], bits, block_size, codebook, x.dtype, out=buf[: n1 - n0])
        if bias is None:
            torch.mm(x, wr.t(), out=y[:, n0:n1])
        else:
            torch.addmm(bias[n0:n1], x, wr.t(), out=y[:, n0:n1])
    return y
