"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Work split: a program owns ``BN`` output rows, one activation row and one of
``split_k`` slices of K; a step covers ``G`` groups of 32 codes per row.

Every tensor of the loop has the same 2-D shape ``[BN, G]`` (a row and a group
per element): Triton gives them one layout, so no value ever moves between
threads, whatever order its layout heuristics pick. The 16 pairs (or 32 codes)
of a group are unrolled at compile time: each position's word offset and bit
shift are constants, and the repeated loads of a word are merged by the
compiler. A position's planes combine into one index into an L1-resident
table: of *pairs* of codes for bits <= 5 (a 4**bits-entry table of float2, so
one lookup and one float2 activation load serve two weights), of single codes
above. With ``split_k > 1`` partial sums go to a float32 workspace that
:func:`_splitk_reduce_kernel` sums, adds the bias to, and casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import PAIR_LUT_MAX_BITS, lookup_table, planes

__all__ = ["gemv", "gemv_ref"]


@triton.jit
def _position_bits(
    q_rows,  # [BN, G] pointers to each (row, group)'s block
    p: tl.constexpr,  # position in the group: a pair (0..15) or a code (0..31)
    mask,
    W: tl.constexpr,
    O: tl.constexpr,
    B: tl.constexpr,
    PAIR: tl.constexpr,
):
    """Index bits that a plane of width W gives position p: [BN, G] int32.

    The word offset and shift are compile-time constants; positions that share
    a word repeat the same load, which the compiler merges.
    """
    F: tl.constexpr = 2 * W if PAIR else W  # field bits per position
    WORD: tl.constexpr = B * O // 32 + (p * F) // 32  # from the group's first word in the plane
    words = tl.load(q_rows + WORD, mask=mask, other=0)
    return ((words >> ((p * F) % 32)) & ((1 << F) - 1)) << (2 * O if PAIR else O)


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    lut_ptr,  # pair table (int64) or code table (float32)
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N] output, or [split_k, M, N] float32 workspace
    # dimensions
    M,
    N,
    K_PAD,
    # strides, in elements
    stride_xm,
    stride_qn,
    stride_sn,
    stride_om,
    stride_os,
    split_k,
    # meta-parameters
    BITS: tl.constexpr,
    B: tl.constexpr,
    W0: tl.constexpr,
    O0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    PAIR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    WORKSPACE: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    POSITIONS: tl.constexpr = 16 if PAIR else 32  # table lookups per group of 32 codes
    STEP: tl.constexpr = 32 * G
    WPB: tl.constexpr = B * BITS // 32  # int32 words per block

    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    n_steps = tl.cdiv(K_PAD, STEP)
    per_split = tl.cdiv(n_steps, split_k)
    step_lo = pid_k * per_split
    step_hi = tl.minimum(step_lo + per_split, n_steps)

    q_rows = q_ptr + offs_n.to(tl.int64)[:, None] * stride_qn  # [BN, 1]
    s_rows = s_ptr + offs_n.to(tl.int64)[:, None] * stride_sn
    zeros = tl.zeros([BN, G], dtype=tl.int32)  # gives [G] vectors the [BN, G] shape (and layout)
    x_row = x_ptr + m.to(tl.int64) * stride_xm
    x_pairs = x_row.to(tl.pointer_type(tl.int64), bitcast=True)
    acc = tl.zeros([BN, G], dtype=tl.float32)
    for step in range(step_lo, step_hi):
        kg = step * STEP + 32 * tl.arange(0, G)[None, :] + zeros  # [BN, G] first code of each group
        mask = n_mask[:, None] & (kg < K_PAD)
        blk = kg // B
        # first word of the (row, group) in its block's plane area
        group_rows = q_rows + blk * WPB + ((kg % B) // 32) * W0
        part = tl.zeros([BN, G], dtype=tl.float32)
        for p in tl.static_range(POSITIONS):
            idx = _position_bits(group_rows, p, mask, W0, O0, B, PAIR)
            if W1 > 0:
                idx |= _position_bits(group_rows + ((kg % B) // 32) * (W1 - W0), p, mask, W1, O1, B, PAIR)
            if W2 > 0:
                idx |= _position_bits(group_rows + ((kg % B) // 32) * (W2 - W0), p, mask, W2, O2, B, PAIR)
            if PAIR:
                pair = tl.load(lut_ptr + idx)  # (c[even], c[odd]) as two float32
                xx = tl.load(x_pairs + kg // 2 + p, mask=mask, other=0)
                part += pair.to(tl.int32).to(tl.float32, bitcast=True) * xx.to(tl.int32).to(tl.float32, bitcast=True)
                part += (pair >> 32).to(tl.int32).to(tl.float32, bitcast=True) * (xx >> 32).to(tl.int32).to(
                    tl.float32, bitcast=True
                )
            else:
                part += tl.load(lut_ptr + idx) * tl.load(x_row + kg + p, mask=mask, other=0.0)
        scale = tl.load(s_rows + blk, mask=mask, other=0.0).to(tl.float32)
        acc += part * scale

    y = tl.sum(acc, axis=1) * (1.0 / tl.sqrt(float(B)))  # [BN]
    out_offs = m * stride_om + offs_n
    if not WORKSPACE:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=n_mask)
    else:
        tl.store(out_ptr + pid_k * stride_os + out_offs, y, mask=n_mask)


@triton.jit
def _splitk_reduce_kernel(
    ws_ptr,  # [SPLIT_K, M * N] float32
    bias_ptr,  # [N] or unused
    out_ptr,  # [M * N]
    MN,
    N,
    SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(ws_ptr + s * MN + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def gemv(
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
    """Launch the GEMV. Shapes are checked by the caller (``hlwq_ops.ops``).

    Args:
        xr: (M, K_pad) float32 rotated activations, contiguous.
        qdata: (N, K_pad * bits / 8) uint8; scale: (N, K_pad / B) float16.
        config: ``BN``, ``G``, ``SPLIT_K``, ``num_warps``, ``num_stages``
            (see :mod:`hlwq_ops.kernels.tuning`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    N = qdata.shape[0]
    pair = bits <= PAIR_LUT_MAX_BITS
    table = lookup_table(bits, codebook, qdata.device, pair)
    words = qdata.view(torch.int32)
    out = torch.empty((M, N), device=xr.device, dtype=out_dtype)
    split_k = config["SPLIT_K"]
    target = out if split_k == 1 else torch.empty((split_k, M, N), device=xr.device, dtype=torch.float32)
    grid = (triton.cdiv(N, config["BN"]), split_k, M)
    _gemv_kernel[grid](
        xr,
        words,
        scale,
        table,
        bias if bias is not None else out,
        target,
        M,
        N,
        k_pad,
        xr.stride(0),
        words.stride(0),
        scale.stride(0),
        N,
        M * N,
        split_k,
        **planes(bits),
        BITS=bits,
        B=block_size,
        PAIR=pair,
        HAS_BIAS=bias is not None,
        WORKSPACE=split_k > 1,
        BN=config["BN"],
        G=config["G"],
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    if split_k > 1:
        block = 1024
        _splitk_reduce_kernel[(triton.cdiv(M * N, block),)](
            target,
            bias if bias is not None else out,
            out,
            M * N,
            N,
            SPLIT_K=split_k,
            HAS_BIAS=bias is not None,
            BLOCK=block,
        )
    return out


def gemv_ref(xr, qdata, scale, bias, bits, block_size, codebook=None) -> torch.Tensor:
    """Plain-torch equivalent of :func:`gemv`, in float64 (the test oracle)."""
    from ..format import dequantize_rotated_ref

    wr = dequantize_rotated_ref(qdata, scale, bits, block_size, codebook, dtype=torch.float64)
    y = xr.double() @ wr.t()
    if bias is not None:
        y = y + bias.double()
    return y
