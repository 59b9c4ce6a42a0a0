"""Tensor-core kernel for mid M: ``y = xr @ Wr.T + bias`` with the weight tile decoded in registers.

A program owns a ``[BM, BN]`` output tile. Per step of ``32 * G`` positions it
decodes the ``[BN, 32 * G]`` rotated weight tile in registers (the GEMV's
decoding, :func:`hlwq_ops.kernels.decode.decode_tile`) and multiplies it with the
float32 activations on the tensor cores in tf32 (10-bit mantissa, like the bfloat16
GEMM it replaces; at these M the kernel is memory-bound, so tf32's rate costs
nothing) -- or in tf32x3 (float32 accuracy) when the output is float32. The weight is read once per M tile, unlike the GEMV, which reads it
once per activation row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import kernel_codebook, planes
from .decode import decode_tile

__all__ = ["mma"]


@triton.jit
def _mma_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32
    s_ptr,  # [N, K_PAD // B] float16
    c_ptr,  # [2**BITS] float32 codebook
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N]
    # dimensions
    M,
    N,
    K_PAD,
    # strides, in elements
    stride_xm,
    stride_qn,
    stride_sn,
    stride_om,
    # meta-parameters
    BITS: tl.constexpr,
    B: tl.constexpr,
    W0: tl.constexpr,
    O0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    INTERPRET: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    BK: tl.constexpr = 32 * G
    m = tl.program_id(1) * BM + tl.arange(0, BM)
    n = tl.program_id(0) * BN + tl.arange(0, BN)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for step in range(0, tl.cdiv(K_PAD, BK)):
        k = step * BK + tl.arange(0, BK)
        x = tl.load(
            x_ptr + m.to(tl.int64)[:, None] * stride_xm + k[None, :],
            mask=(m[:, None] < M) & (k[None, :] < K_PAD),
            other=0.0,
        )
        w = decode_tile(q_ptr, s_ptr, c_ptr, n, step, N, K_PAD, stride_qn, stride_sn, BITS, B, W0, W1, O1, W2, O2, G, INTERPRET)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
    out_mask = (m[:, None] < M) & (n[None, :] < N)
    tl.store(out_ptr + m.to(tl.int64)[:, None] * stride_om + n[None, :], acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def mma(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: dict,
) -> torch.Tensor:
    """Launch the tensor-core kernel. Shapes are checked by the caller.

    Args:
        xr: (M, K_pad) float32 rotated activations, contiguous.
        config: ``BM``, ``BN``, ``G`` (32 * G positions per step), ``num_warps``, ``num_stages``.

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    N = qdata.shape[0]
    words = qdata.view(torch.int32)
    out = torch.empty((M, N), device=xr.device, dtype=out_dtype)
    grid = (triton.cdiv(N, config["BN"]), triton.cdiv(M, config["BM"]))
    _mma_kernel[grid](
        xr,
        words,
        scale,
        kernel_codebook(bits, codebook, qdata.device),
        bias if bias is not None else out,
        out,
        M,
        N,
        k_pad,
        xr.stride(0),
        words.stride(0),
        scale.stride(0),
        out.stride(0),
        **planes(bits),
        BITS=bits,
        B=block_size,
        HAS_BIAS=bias is not None,
        PRECISION="tf32x3" if out_dtype == torch.float32 else "tf32",
        INTERPRET=xr.device.type == "cpu",
        BM=config["BM"],
        BN=config["BN"],
        G=config["G"],
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    return out
