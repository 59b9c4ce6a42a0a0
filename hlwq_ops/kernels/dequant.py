"""Dequantize packed codes to the rotated-domain weight ``Wr = s / sqrt(B) * c[code]``.

The fallback path for large M (``xr @ Wr.T`` by cuBLAS) and the first half of
``hlwq.dequantize`` (the inverse rotation follows). Each element of a
``[BN, BK]`` tile reads the words holding its planes; neighbouring elements
share words, so the loads hit L1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import kernel_codebook, planes

__all__ = ["dequantize_rotated", "rotated_tile"]


@triton.jit
def _plane_code(q_rows, blk, i, mask, W: tl.constexpr, O: tl.constexpr, B: tl.constexpr, WPB: tl.constexpr):
    """Bits [O, O + W) of each code of the tile: [BN, BK] int32."""
    word = blk * WPB + (B * O // 32) + (i * W) // 32
    words = tl.load(q_rows + word[None, :], mask=mask, other=0)
    return ((words >> ((i * W) % 32)[None, :]) & ((1 << W) - 1)) << O


@triton.jit
def rotated_tile(
    q_ptr,  # [N, K_PAD * BITS // 32] int32
    s_ptr,  # [N, K_PAD // B] float16
    c_ptr,  # [2**BITS] float32 codebook
    n,  # [BN] rows
    k,  # [BK] positions along K_PAD
    N,
    K_PAD,
    stride_qn,
    stride_sn,
    BITS: tl.constexpr,
    B: tl.constexpr,
    W0: tl.constexpr,
    O0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
):
    """The rotated-domain weight ``s / sqrt(B) * c[code]`` of a [BN, BK] tile, float32 (0 outside)."""
    WPB: tl.constexpr = B * BITS // 32
    mask = (n[:, None] < N) & (k[None, :] < K_PAD)
    blk = k // B
    i = k % B
    q_rows = q_ptr + n.to(tl.int64)[:, None] * stride_qn
    code = _plane_code(q_rows, blk, i, mask, W0, O0, B, WPB)
    if W1 > 0:
        code |= _plane_code(q_rows, blk, i, mask, W1, O1, B, WPB)
    if W2 > 0:
        code |= _plane_code(q_rows, blk, i, mask, W2, O2, B, WPB)
    scale = tl.load(s_ptr + n.to(tl.int64)[:, None] * stride_sn + blk[None, :], mask=mask, other=0.0)
    return tl.load(c_ptr + code) * scale.to(tl.float32) * (1.0 / tl.sqrt(float(B)))


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
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    k = tl.program_id(1) * BK + tl.arange(0, BK)
    w = rotated_tile(q_ptr, s_ptr, c_ptr, n, k, N, K_PAD, stride_qn, stride_sn, BITS, B, W0, O0, W1, O1, W2, O2)
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
    bn, bk = 32, 128
    _dequant_kernel[(triton.cdiv(N, bn), triton.cdiv(k_pad, bk))](
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
        BN=bn,
        BK=bk,
        num_warps=4,
        **planes(bits),
    )
    return out
