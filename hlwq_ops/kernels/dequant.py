"""Dequantize packed codes to the rotated-domain weight ``Wr = s / sqrt(B) * c[code]``.

The fallback path for large M (``xr @ Wr.T`` by cuBLAS) and the first half of
``hlwq.dequantize`` (the inverse rotation follows). A program decodes a
``[BN, 32 * G]`` tile in registers with the GEMV's decoding
(:func:`hlwq_ops.kernels.decode.decode_tile`) and stores it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import kernel_codebook, planes
from .decode import decode_tile

__all__ = ["dequantize_rotated"]


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
    INTERPRET: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    step = tl.program_id(1)
    w = decode_tile(q_ptr, s_ptr, c_ptr, n, step, N, K_PAD, stride_qn, stride_sn, BITS, B, W0, W1, O1, W2, O2, G, INTERPRET)
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
) -> torch.Tensor:
    """(N, K_pad) rotated-domain weight in ``dtype``."""
    N = qdata.shape[0]
    k_pad = scale.shape[1] * block_size
    words = qdata.view(torch.int32)
    out = torch.empty((N, k_pad), device=qdata.device, dtype=dtype)
    bn, g = 32, 4
    _dequant_kernel[(triton.cdiv(N, bn), triton.cdiv(k_pad, 32 * g))](
        words,
        scale,
        kernel_codebook(bits, codebook, qdata.device),
        out,
        N,
        k_pad,
        words.stride(0),
        scale.stride(0),
        out.stride(0),
        BITS=bits,
        B=block_size,
        INTERPRET=qdata.device.type == "cpu",
        BN=bn,
        G=g,
        num_warps=4,
        **planes(bits),
    )
    return out
