"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Work split: a program owns ``R * BN`` output rows and one of ``SPLIT_K`` slices
of K; a step covers ``G`` groups of 32 codes. Thread layout: Triton places
``BN`` and ``G`` across threads; every other dimension is a *leading*
broadcast dimension, which Triton keeps in registers, so each thread unpacks,
looks up and reduces whole groups of ``R`` rows on its own (no shuffles, no
shared memory), and its activation loads serve ``R`` rows.

Per group a thread turns the plane words into table indices: one per *pair*
of codes for bits <= 5 (a 4**bits-entry table of float2), one per code above.
The rotated activations are float32, read as float2 pairs in pair mode.
The tensors of a step have shape ``[PA, 4, R, BN, G]``: position ``p = PA * b
+ a`` within the group (a pair or a code), ``b`` also being the word of a
4-bit plane. With ``SPLIT_K > 1`` partial sums go to a float32 workspace that
:func:`_splitk_reduce_kernel` sums, adds the bias to, and casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import PAIR_LUT_MAX_BITS, lookup_table, planes

__all__ = ["gemv", "gemv_ref"]


@triton.jit
def _plane_bits(
    q_rows,  # [R, BN] pointers to the rows' words
    word_base,  # [G] first word of each group's block
    gin,  # [G] group index inside its block
    mask,  # [R, BN, G]
    W: tl.constexpr,
    O: tl.constexpr,
    B: tl.constexpr,
    PA: tl.constexpr,
    PAIR: tl.constexpr,
):
    """Index bits a plane of width W contributes: [PA, 4, R, BN, G] int32."""
    F: tl.constexpr = 2 * W if PAIR else W  # bits per position (a pair or a code)
    a = tl.arange(0, PA)[:, None]
    b = tl.arange(0, 4)[None, :]
    bitpos = (PA * b + a) * F  # [PA, 4] bit offset inside the group's plane bits
    group = word_base + (B * O // 32) + gin * W  # [G] first word of the group in this plane
    base = q_rows[None, None, :, :, None] + group[None, None, None, None, :]
    if PA * F <= 32:
        # one word holds all PA positions of a b: a [1, 4, ...] load, vectorized for W = 4
        woff = (PA * F * tl.arange(0, 4)) // 32
        words = tl.load(base + woff[None, :, None, None, None], mask=mask[None, None], other=0)
    else:
        words = tl.load(base + (bitpos // 32)[:, :, None, None, None], mask=mask[None, None], other=0)
    fields = (words >> (bitpos % 32)[:, :, None, None, None]) & ((1 << F) - 1)
    return fields << (2 * O if PAIR else O)


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    lut_ptr,  # pair table (int64) or code table (float32)
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N] output, or [SPLIT_K, M, N] float32 workspace
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
    x_step,
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
    SPLIT_K: tl.constexpr,
    BM: tl.constexpr,
    R: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    PA: tl.constexpr = 4 if PAIR else 8  # positions per b: 16 pairs or 32 codes per group
    STEP: tl.constexpr = 32 * G
    WPB: tl.constexpr = B * BITS // 32  # int32 words per block

    offs_n = pid_n * R * BN + tl.arange(0, R)[:, None] * BN + tl.arange(0, BN)[None, :]  # [R, BN]
    n_mask = offs_n < N
    n_steps = tl.cdiv(K_PAD, STEP)
    per_split = tl.cdiv(n_steps, SPLIT_K)
    step_lo = pid_k * per_split
    step_hi = tl.minimum(step_lo + per_split, n_steps)

    q_rows = q_ptr + offs_n.to(tl.int64) * stride_qn
    s_rows = s_ptr + offs_n.to(tl.int64) * stride_sn
    offs_m = pid_m * BM + tl.arange(0, BM)
    m_mask = offs_m < M
    pos = PA * tl.arange(0, 4)[None, :] + tl.arange(0, PA)[:, None]  # [PA, 4] pair or code index
    acc = tl.zeros([BM, R, BN, G], dtype=tl.float32)
    for step in range(step_lo, step_hi):
        kg = step * STEP + 32 * tl.arange(0, G)  # [G] first code of each group
        g_mask = kg < K_PAD
        blk = kg // B
        gin = (kg % B) // 32
        word_base = blk * WPB
        mask = n_mask[:, :, None] & g_mask[None, None, :]  # [R, BN, G]
        scale = tl.load(s_rows[:, :, None] + blk[None, None, :], mask=mask, other=0.0).to(tl.float32)

        idx = _plane_bits(q_rows, word_base, gin, mask, W0, O0, B, PA, PAIR)
        if W1 > 0:
            idx |= _plane_bits(q_rows, word_base, gin, mask, W1, O1, B, PA, PAIR)
        if W2 > 0:
            idx |= _plane_bits(q_rows, word_base, gin, mask, W2, O2, B, PA, PAIR)

        # Activations, in the full [BM, PA, 4, R, BN, G] shape so that they share
        # the layout of the codes (the copies along R are the same loads, merged
        # by the compiler); ``x_step`` (always 1) is a runtime value so that the
        # compiler sees no contiguity to vectorize along in a layout of its own.
        shape: tl.constexpr = [BM, PA, 4, R, BN, G]
        x_mask = tl.broadcast_to(
            m_mask[:, None, None, None, None, None] & g_mask[None, None, None, None, None, :], shape
        )
        x_rows = offs_m.to(tl.int64)[:, None, None, None, None, None] * stride_xm
        x_pos = (pos * x_step)[None, :, :, None, None, None]
        if PAIR:
            pair = tl.load(lut_ptr + idx)  # [PA, 4, R, BN, G] int64: (c[even], c[odd])
            v_even = pair.to(tl.int32).to(tl.float32, bitcast=True)
            v_odd = (pair >> 32).to(tl.int32).to(tl.float32, bitcast=True)
            x_pairs = x_ptr.to(tl.pointer_type(tl.int64), bitcast=True)
            x_offs = tl.broadcast_to((x_rows + kg[None, None, None, None, None, :]) // 2 + x_pos, shape)
            xx = tl.load(x_pairs + x_offs, mask=x_mask, other=0)
            x_even = xx.to(tl.int32).to(tl.float32, bitcast=True)
            x_odd = (xx >> 32).to(tl.int32).to(tl.float32, bitcast=True)
            part = v_even[None] * x_even + v_odd[None] * x_odd
        else:
            v = tl.load(lut_ptr + idx)  # [PA, 4, R, BN, G] float32
            x_offs = tl.broadcast_to(x_rows + kg[None, None, None, None, None, :] + x_pos, shape)
            part = v[None] * tl.load(x_ptr + x_offs, mask=x_mask, other=0.0)
        acc += tl.sum(tl.sum(part, axis=1), axis=1) * scale[None]

    y = tl.sum(acc, axis=3) * (1.0 / tl.sqrt(float(B)))  # [BM, R, BN]
    out_mask = m_mask[:, None, None] & n_mask[None]
    out_offs = offs_m[:, None, None] * stride_om + offs_n[None]
    if SPLIT_K == 1:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None]
        tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        tl.store(out_ptr + pid_k * stride_os + out_offs, y, mask=out_mask)


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
        config: ``BM``, ``R``, ``BN``, ``G``, ``SPLIT_K``, ``num_warps``,
            ``num_stages`` (see :mod:`hlwq_ops.kernels.tuning`).

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
    grid = (triton.cdiv(N, config["R"] * config["BN"]), split_k, triton.cdiv(M, config["BM"]))
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
        1,
        **planes(bits),
        BITS=bits,
        B=block_size,
        PAIR=pair,
        HAS_BIAS=bias is not None,
        SPLIT_K=split_k,
        BM=config["BM"],
        R=config["R"],
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
