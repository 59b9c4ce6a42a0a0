"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Work split: a program owns ``BN`` output rows, one activation row and one of
``split_k`` slices of K; a step covers ``G`` groups of 32 codes per row.

Layout. Every tensor of the loop is ``[BN, C]``: a row and one *word of plane
0* per element (``C = G * W0`` columns). The plane-0 words are the loop's only
``tl.load`` (contiguous, so Triton vectorizes it: a thread gets a group's words
for several rows); every other load -- plane-1/2 words, table lookups,
activations, scales -- is an elementwise inline-PTX ``ld.global.nc``, which has
no layout of its own, so nothing ever moves between threads, whatever layout
heuristics the Triton version applies. The activations a thread loads serve all
of its rows. Those gathers use clamped, always-valid addresses; columns past K
are zeroed before they are accumulated. (The interpreter, which cannot run
PTX, takes ``tl.load`` on the same addresses.)

Lookups. The positions inside a plane-0 word are unrolled, so shifts are
constants. A position's planes combine into one index into an L1-resident
table: of *pairs* of codes for bits <= 5 (4**bits entries of float2: one lookup
and one float2 activation load serve two weights), of single codes above.
With ``split_k > 1`` partial sums go to a float32 workspace that
:func:`_splitk_reduce_kernel` sums, adds the bias to, and casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import PAIR_LUT_MAX_BITS, lookup_table, planes

__all__ = ["gemv", "gemv_ref"]


# Gathers: ``*(base + offset * size)`` with an int64 byte address ``base`` (scalar
# or tensor) and an int32 element offset >= 0, for any shape. On the GPU an
# elementwise inline-PTX load (no layout of its own, one IMAD.WIDE for the
# address); in the interpreter a tl.load of the same address.


@triton.jit
def _gather64(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        return tl.load((base + offset.to(tl.int64) * 8).to(tl.pointer_type(tl.int64), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mad.wide.u32 a, $1, 8, $2; ld.global.nc.b64 $0, [a]; }",
        "=l,r,l",
        [offset, base],
        dtype=tl.int64,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _gather32(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        return tl.load((base + offset.to(tl.int64) * 4).to(tl.pointer_type(tl.int32), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mad.wide.u32 a, $1, 4, $2; ld.global.nc.b32 $0, [a]; }",
        "=r,r,l",
        [offset, base],
        dtype=tl.int32,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _gather16(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        return tl.load((base + offset.to(tl.int64) * 2).to(tl.pointer_type(tl.int16), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mad.wide.u32 a, $1, 2, $2; ld.global.nc.b16 $0, [a]; }",
        "=h,r,l",
        [offset, base],
        dtype=tl.int16,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _plane_bits(
    q_base,  # [BN, 1] int64 row addresses
    block_word,  # [1, C] first word of each column's block
    gin,  # [1, C] group index inside its block
    e,  # [1, C] word of plane 0 inside the group
    a: tl.constexpr,  # position inside that word
    W: tl.constexpr,
    O: tl.constexpr,
    B: tl.constexpr,
    F0: tl.constexpr,
    PAIR: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Index bits that a plane of width W (not plane 0) gives position ``e * (32 // F0) + a``."""
    F: tl.constexpr = 2 * W if PAIR else W
    p = e * (32 // F0) + a
    words = _gather32(q_base, block_word + B * O // 32 + gin * W + (p * F) // 32, INTERPRET)
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
    INTERPRET: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    F0: tl.constexpr = 2 * W0 if PAIR else W0  # index bits a position takes in plane 0
    PER_WORD: tl.constexpr = 32 // F0  # positions in a word of plane 0
    C: tl.constexpr = G * W0  # columns: the plane-0 words of G groups
    WPB: tl.constexpr = B * BITS // 32  # int32 words per block
    GPB: tl.constexpr = B // 32  # groups per block

    offs_n = pid_n * BN + tl.arange(0, BN)
    n_mask = offs_n < N
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)  # clamped: every address below is valid
    n_groups = K_PAD // 32
    n_steps = tl.cdiv(n_groups, G)
    per_split = tl.cdiv(n_steps, split_k)
    step_lo = pid_k * per_split
    step_hi = tl.minimum(step_lo + per_split, n_steps)

    q_rows = (q_ptr + rows * stride_qn)[:, None]  # [BN, 1]
    q_base = q_rows.to(tl.int64, bitcast=True)
    s_base = (s_ptr + rows * stride_sn)[:, None].to(tl.int64, bitcast=True)
    lut_base = lut_ptr.to(tl.int64, bitcast=True)
    x_base = (x_ptr + m.to(tl.int64) * stride_xm).to(tl.int64, bitcast=True)
    col = tl.arange(0, C)[None, :]
    e = col % W0
    acc = tl.zeros([BN, C], dtype=tl.float32)
    for step in range(step_lo, step_hi):
        group = step * G + col // W0  # [1, C]
        valid = group < n_groups
        # plane 0, the anchor load: each group's W0 words are contiguous
        words = tl.load(q_rows + (group // GPB) * WPB + B * O0 // 32 + (group % GPB) * W0 + e, mask=valid, other=0)
        group = tl.minimum(group, n_groups - 1)
        blk = group // GPB
        gin = group % GPB
        part = tl.zeros([BN, C], dtype=tl.float32)
        for a in tl.static_range(PER_WORD):
            idx = ((words >> (a * F0)) & ((1 << F0) - 1)) << (2 * O0 if PAIR else O0)
            if W1 > 0:
                idx |= _plane_bits(q_base, blk * WPB, gin, e, a, W1, O1, B, F0, PAIR, INTERPRET)
            if W2 > 0:
                idx |= _plane_bits(q_base, blk * WPB, gin, e, a, W2, O2, B, F0, PAIR, INTERPRET)
            pos = e * PER_WORD + a  # [1, C] pair (or code) index in the group
            if PAIR:
                pair = _gather64(lut_base, idx, INTERPRET)  # (c[even], c[odd]) as two float32
                xx = _gather64(x_base, group * 16 + pos, INTERPRET)
                part += pair.to(tl.int32).to(tl.float32, bitcast=True) * xx.to(tl.int32).to(tl.float32, bitcast=True)
                part += (pair >> 32).to(tl.int32).to(tl.float32, bitcast=True) * (xx >> 32).to(tl.int32).to(
                    tl.float32, bitcast=True
                )
            else:
                v = _gather32(lut_base, idx, INTERPRET).to(tl.float32, bitcast=True)
                part += v * _gather32(x_base, group * 32 + pos, INTERPRET).to(tl.float32, bitcast=True)
        scale = _gather16(s_base, blk, INTERPRET).to(tl.float16, bitcast=True).to(tl.float32)
        acc += tl.where(valid, part * scale, 0.0)

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
        INTERPRET=xr.device.type == "cpu",
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
