"""Tensor-core GEMV for 1..16 activation rows: ``y = xr @ Wr.T + bias``, decoded straight into ``mma.sync``.

Every thread plays a fixed role in a warp-wide ``mma.sync.m16n8k16`` (bf16 in,
float32 accumulate): the weight is the A operand (16 weight rows x 16
positions), the activations the B operand (16 positions x 8 activation rows).
A dot product does not care in which order it visits K, so the kernel lets
each thread decode the codes it loads and feeds them to the MMA where they
are, and puts the activations in the same order: thread ``(g, t)`` (lane
``4 g + t``) reads the 32 codes ``32 t .. 32 t + 31`` of a block of weight
rows ``g`` and ``g + 8`` (four plane-0 words -- one 16-byte load -- and, at Q5,
one plane-1 word), and holds the 32 rotated activations at the same positions
of activation row ``g``. Word ``w``, codes ``4 h .. 4 h + 3`` go to the MMA ``2 w + h``
of the block's eight: codes ``4 h, 4 h + 1`` are its K slots ``2 t, 2 t + 1``,
codes ``4 h + 2, 4 h + 3`` its slots ``2 t + 8, 2 t + 9``. No data moves between
threads but the codebook lookups (a warp shuffle per weight: lane ``i`` holds
``bf16(c[i])`` in both halves, and two results make one bf16x2 operand with one
PRMT) and the MMA itself; the block's sums are scaled by the rows' block scales.

Against the LUT GEMV (:mod:`.gemv`) this drops the float32 FMA per weight and
the row sums' shuffles, and serves up to 8 activation rows per MMA (16 with
``MG = 2``) for the price of one.

Every tensor is ``[32 * num_warps]``, one element per thread (Triton's default
layout: element ``i`` in lane ``i % 32`` of warp ``i // 32``), and every load and
store is an elementwise inline-PTX instruction, so no layout pass moves
anything. The interpreter, which cannot run PTX, emulates the MMA
(:func:`_mma_emulated`) on the same per-thread registers.

A warp owns ``KB`` blocks of K (its activations stay in registers) and walks a
program's rows 16 at a time, the next 16 rows' loads issued at the top of each
iteration (in a branch of their own, which keeps ptxas from moving them to the
end of the body);
each warp stores its partial sums (with ``WARP_SUM`` the program adds its
warps' first, through shared memory), and the last program of a row range to
finish sums them (split-K, as the GEMV).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    SplitPlan,
    arrive,
    as_words,
    capability,
    kernel_codebook,
    launch_options,
    launch_split_plan,
    pdl,
    planes,
    prefetch_l2,
    release_dependents,
    reset_counter,
    sum_partials,
    unit_stride,
    wait_for_inputs,
)
from .decode import code_at, code_sources, gather16, gather32, store_elementwise
from .gemv import gemv_ref
from .launch import Launch, cdiv, config_key, config_of, plan_cache

__all__ = ["aligned", "as_operand", "plan_for", "runs_on", "supports", "tc_gemv", "tc_gemv_ref"]

BLOCK = tl.constexpr(128)  # positions of K per block: 4 threads x 32 codes


def supports(bits: int, block_size: int, dtype: torch.dtype = torch.bfloat16) -> bool:
    """Whether :func:`tc_gemv` serves a layer and activation dtype.

    4- or 5-bit codes (looked up by shuffle) in blocks of 128, 16-bit
    activations (multiplied in bfloat16; float32 ones keep the GEMV's float32).
    """
    return bits in (4, 5) and block_size == 128 and dtype in (torch.bfloat16, torch.float16)


def runs_on(device: torch.device) -> bool:
    """Whether ``device`` runs the kernel: the interpreter (CPU), or a GPU with the bfloat16 ``mma.sync`` (sm_80 and
    newer; ptxas refuses it below)."""
    return device.type == "cpu" or capability(device) >= (8, 0)


def as_operand(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the activations :func:`tc_gemv` reads: bfloat16, contiguous, 16-byte aligned (a copy if need be)."""
    x = x.to(torch.bfloat16).contiguous()
    return x if x.data_ptr() % 16 == 0 else x.clone()


def aligned(qdata: torch.Tensor) -> bool:
    """Whether the packed rows are 16-byte aligned, as :func:`tc_gemv` reads them (any weight made whole is)."""
    return qdata.data_ptr() % 16 == 0 and qdata.stride(0) % 16 == 0 and qdata.stride(1) == 1


@triton.jit
def _load4(base, offset, INTERPRET: tl.constexpr):
    """Four int32 words at ``base + 4 * offset`` (16-byte aligned): one ``ld.global.nc.v4``."""
    if INTERPRET:
        p = (base + offset.to(tl.uint32, bitcast=True).to(tl.int64) * 4).to(tl.pointer_type(tl.int32), bitcast=True)
        return tl.load(p), tl.load(p + 1), tl.load(p + 2), tl.load(p + 3)
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mul.wide.u32 a, $4, 4; add.u64 a, a, $5; ld.global.nc.v4.b32 {$0, $1, $2, $3}, [a]; }",
        "=r,=r,=r,=r,r,l",
        [offset, base],
        dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
        is_pure=True,
        pack=1,
    )


@triton.jit
def _bf16_bits(v):
    """The 16 bits of ``bf16(v)`` (round to nearest even, finite ``v``) in the low half of an int32.

    Rounded by hand: the interpreter's float32 -> bfloat16 conversion does not round to nearest.
    """
    bits = v.to(tl.int32, bitcast=True)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


@triton.jit
def _lane_bf16(like, c_base, BITS: tl.constexpr, INTERPRET: tl.constexpr):
    """``bf16(c[lane % 2**BITS])`` in both halves of every thread's register (shape of ``like``)."""
    if INTERPRET:
        return like  # unused: the interpreter looks codes up in memory
    lane = tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [like], dtype=tl.int32, is_pure=True, pack=1)
    h = _bf16_bits(gather32(c_base, lane % (1 << BITS), INTERPRET).to(tl.float32, bitcast=True))
    return h | (h << 16)


@triton.jit
def _pair(lo, hi, c_base, c_lane, BITS: tl.constexpr, INTERPRET: tl.constexpr):
    """bf16x2 ``(c[lo], c[hi])`` (``lo`` in the low half): two warp shuffles and one PRMT.

    A shuffle reads bits 0..4 of the code only, so bits from BITS up may hold
    anything (lane ``i`` holds ``c[i % 2**BITS]``).
    """
    if INTERPRET:
        a = _bf16_bits(gather32(c_base, lo & ((1 << BITS) - 1), INTERPRET).to(tl.float32, bitcast=True))
        b = _bf16_bits(gather32(c_base, hi & ((1 << BITS) - 1), INTERPRET).to(tl.float32, bitcast=True))
        return a | (b << 16)
    # (LLVM would split the select of two halves into two LOP3s; a PRMT is one instruction.)
    return tl.inline_asm_elementwise(
        "{ .reg .b32 a, b; shfl.sync.idx.b32 a, $1, $2, 0x1f, 0xffffffff; "
        "shfl.sync.idx.b32 b, $1, $3, 0x1f, 0xffffffff; prmt.b32 $0, a, b, 0x7610; }",
        "=r,r,r,r",
        [c_lane, lo.to(tl.int32, bitcast=True), hi.to(tl.int32, bitcast=True)],
        dtype=tl.int32,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _halves(r):
    """The two bf16 of a bf16x2 register as float32: (low, high)."""
    return (r << 16).to(tl.float32, bitcast=True), ((r >> 16) << 16).to(tl.float32, bitcast=True)


@triton.jit
def _k16(r0, r1):
    """A thread's four K slots of one MMA row (registers ``r0``: slots 2t, 2t+1; ``r1``: 2t+8, 2t+9): [T, 2, 2]."""
    a, b = _halves(r0)
    c, d = _halves(r1)
    return tl.join(tl.join(a, b), tl.join(c, d))


@triton.jit
def _mma_emulated(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, NW: tl.constexpr):
    """What ``mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32`` computes, on per-thread registers (interpreter)."""
    A0 = tl.reshape(_k16(a0, a2), (NW, 8, 16))  # [warp, row g, K slot]: rows 0..7
    A1 = tl.reshape(_k16(a1, a3), (NW, 8, 16))  # rows 8..15
    Bm = tl.reshape(_k16(b0, b1), (NW, 8, 16))  # [warp, column g, K slot]
    D0 = tl.reshape(tl.sum(A0[:, :, None, :] * Bm[:, None, :, :], axis=3), (NW, 8, 4, 2))  # [warp, g, t, e]
    D1 = tl.reshape(tl.sum(A1[:, :, None, :] * Bm[:, None, :, :], axis=3), (NW, 8, 4, 2))
    d0, d1 = tl.split(D0)  # columns 2t, 2t + 1
    d2, d3 = tl.split(D1)
    T: tl.constexpr = NW * 32
    return (c0 + tl.reshape(d0, (T,)), c1 + tl.reshape(d1, (T,)), c2 + tl.reshape(d2, (T,)),
            c3 + tl.reshape(d3, (T,)))


@triton.jit
def _mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, NW: tl.constexpr, INTERPRET: tl.constexpr):
    """D = A B + C for the warp: A (16 x 16, bf16) in a0..a3, B (16 x 8) in b0, b1, C and D float32 in c0..c3."""
    if INTERPRET:
        return _mma_emulated(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3, NW)
    return tl.inline_asm_elementwise(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, "
        "{$10, $11, $12, $13};",
        "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f",
        [a0, a1, a2, a3, b0, b1, c0, c1, c2, c3],
        dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
        is_pure=True,
        pack=1,
    )


@triton.jit
def _activations(x_base, m, M, blk, n_blk, t, stride_xm, INTERPRET: tl.constexpr):
    """Positions ``32 t .. 32 t + 31`` of block ``blk`` of activation row ``m`` (zero past M or K): 16 bf16x2."""
    valid = (m < M) & (blk < n_blk)
    offset = (tl.minimum(m, M - 1) * stride_xm + tl.minimum(blk, n_blk - 1) * BLOCK + 32 * t) // 2  # in words
    out = ()
    for q in tl.static_range(4):
        words = _load4(x_base, offset + 4 * q, INTERPRET)
        for j in tl.static_range(4):
            out = out + (tl.where(valid, words[j], 0),)
    return out


@triton.jit
def _fetch(q_base, row, blk, t, stride_qn, WPB: tl.constexpr, W1: tl.constexpr, INTERPRET: tl.constexpr):
    """The loads of one row's part of a block: four plane-0 words, the plane-1 word (if any)."""
    at = row * stride_qn + blk * WPB
    w = _load4(q_base, at + 4 * t, INTERPRET)
    p1 = w[0]
    if W1 > 0:
        p1 = gather32(q_base, at + 16 + t, INTERPRET)  # codes 32 t .. 32 t + 31 of plane 1
    return w[0], w[1], w[2], w[3], p1


@triton.jit
def _word_pairs(w0, p1, word: tl.constexpr, h: tl.constexpr, c_base, c_lane, BITS: tl.constexpr, W1: tl.constexpr,
                O1: tl.constexpr, PAIRED: tl.constexpr, INTERPRET: tl.constexpr):
    """Codes ``4 h .. 4 h + 3`` of plane-0 word ``word`` as two bf16x2 registers: (codes 4h, 4h+1), (4h+2, 4h+3)."""
    p1 = p1.to(tl.uint32, bitcast=True) >> (8 * word)
    s0, s1, s2 = code_sources(w0.to(tl.uint32, bitcast=True), p1, p1, O1, 0, PAIRED, INTERPRET)
    codes = ()
    for a in tl.static_range(4 * h, 4 * h + 4):  # bits from BITS up left as garbage: the shuffle ignores them
        codes = codes + (code_at(s0, s1, s2, a, BITS=BITS, W0=4, W1=W1, O1=O1, W2=0, O2=0, PAIRED=PAIRED,
                                 EXACT=False),)
    return (_pair(codes[0], codes[1], c_base, c_lane, BITS, INTERPRET),
            _pair(codes[2], codes[3], c_base, c_lane, BITS, INTERPRET))


@triton.jit
def _block(top, bottom, xs, c_base, c_lane, BITS: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr,
           PAIRED: tl.constexpr, NW: tl.constexpr, INTERPRET: tl.constexpr):
    """One block of 16 rows x 128 positions: the eight MMAs' sums (unscaled), 4 float32 per thread."""
    zero = tl.zeros(xs[0].shape, dtype=tl.float32)
    acc = (zero, zero, zero, zero)
    for word in tl.static_range(4):
        for h in tl.static_range(2):
            a0, a2 = _word_pairs(top[word], top[4], word, h, c_base, c_lane, BITS, W1, O1, PAIRED, INTERPRET)
            a1, a3 = _word_pairs(bottom[word], bottom[4], word, h, c_base, c_lane, BITS, W1, O1, PAIRED, INTERPRET)
            acc = _mma(a0, a1, a2, a3, xs[4 * word + 2 * h], xs[4 * word + 2 * h + 1], acc[0], acc[1], acc[2],
                       acc[3], NW, INTERPRET)
    return acc


@triton.jit
def _fetch_tile(q_base, s_base, row0, row_hi, part, n_blk, g, t, stride_qn, stride_sn, WPB: tl.constexpr,
                W1: tl.constexpr, KB: tl.constexpr, INTERPRET: tl.constexpr):
    """:func:`_fetch` of rows ``row0 + g`` and ``row0 + g + 8`` (clamped below ``row_hi``) for the warp's KB blocks,
    each with its int16 scale bits."""
    out = ()
    top = tl.minimum(row0 + g, row_hi - 1)
    bottom = tl.minimum(top + 8, row_hi - 1)
    for b in tl.static_range(KB):
        blk = tl.minimum(part * KB + b, n_blk - 1)
        out = out + (_fetch(q_base, top, blk, t, stride_qn, WPB, W1, INTERPRET)
                     + (gather16(s_base, top * stride_sn + blk, INTERPRET),),
                     _fetch(q_base, bottom, blk, t, stride_qn, WPB, W1, INTERPRET)
                     + (gather16(s_base, bottom * stride_sn + blk, INTERPRET),))
    return out


@triton.jit
def _store_warp_sum(y, ws_ptr, out_ptr, bias_ptr, pid_k, row0, row_hi, m0, M, N, NORM: tl.constexpr,
                    NW: tl.constexpr, WORKSPACE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The program's warps' sums of ``y`` (one 16-row tile, 8 activation rows), stored once: slice ``pid_k``.

    ``y``: the four [T] accumulators of every thread (rows g, g + 8 x columns 2t, 2t + 1). Summed across warps
    through shared memory (Triton's reduction), so the workspace holds one slice per program, not per warp.
    """
    v = tl.join(tl.join(y[0], y[2]), tl.join(y[1], y[3]))  # [T, 2, 2]: flat index e = 2 * (e // 2) + e % 2
    v = tl.sum(tl.reshape(v, (NW, 32, 4)), axis=0) * NORM  # [lane, e]
    lane = tl.arange(0, 32)[:, None]
    e = tl.arange(0, 4)[None, :]
    row = row0 + lane // 4 + 8 * (e // 2)
    m = m0 + 2 * (lane % 4) + e % 2
    valid = (row < row_hi) & (m < M)
    if WORKSPACE:
        tl.store(ws_ptr + (tl.cast(pid_k, tl.int64) * M + m) * N + row, v, mask=valid)
    else:
        if HAS_BIAS:
            v += tl.load(bias_ptr + row, mask=valid, other=0.0).to(tl.float32)
        tl.store(out_ptr + m.to(tl.int64) * N + row, v.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _tile(words, xs, row0, row_hi, m0, M, N, part, pid_k, g, t, c_base, c_lane, ws_ptr, out_ptr, bias_ptr,
          BITS: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr, PAIRED: tl.constexpr, KB: tl.constexpr,
          MG: tl.constexpr, NW: tl.constexpr, WARP_SUM: tl.constexpr, WORKSPACE: tl.constexpr,
          HAS_BIAS: tl.constexpr, INTERPRET: tl.constexpr):
    """Rows ``row0 .. row0 + 15`` from their loaded ``words`` (:func:`_fetch_tile`): the warp's sums over its KB
    blocks for each group of 8 activation rows, stored -- as the warp's partial (with WARP_SUM the program's), or
    straight to the output with the bias when there is no workspace."""
    NORM: tl.constexpr = 1.0 / (float(BLOCK) ** 0.5)  # the codebook's scale
    zero = tl.zeros(xs[0][0].shape, dtype=tl.float32)
    for mg in tl.static_range(MG):
        y = (zero, zero, zero, zero)  # rows g (columns 2t, 2t+1), rows g + 8 (the same)
        for b in tl.static_range(KB):
            upper = words[2 * b]  # rows g
            lower = words[2 * b + 1]  # rows g + 8
            acc = _block(upper, lower, xs[mg * KB + b], c_base, c_lane, BITS, W1, O1, PAIRED, NW, INTERPRET)
            s_top = upper[5].to(tl.float16, bitcast=True).to(tl.float32)
            s_bottom = lower[5].to(tl.float16, bitcast=True).to(tl.float32)
            y = (y[0] + s_top * acc[0], y[1] + s_top * acc[1], y[2] + s_bottom * acc[2], y[3] + s_bottom * acc[3])
        if WARP_SUM:
            _store_warp_sum(y, ws_ptr, out_ptr, bias_ptr, pid_k, row0, row_hi, m0 + 8 * mg, M, N, NORM, NW,
                            WORKSPACE, HAS_BIAS)
        else:
            for e in tl.static_range(4):
                row = row0 + g + 8 * (e // 2)
                m = m0 + 8 * mg + 2 * t + e % 2
                valid = (row < row_hi) & (m < M)
                value = y[e] * NORM
                if WORKSPACE:
                    ptr = ws_ptr + (part.to(tl.int64) * M + m) * N + row
                else:
                    if HAS_BIAS:
                        value += tl.load(bias_ptr + tl.minimum(row, N - 1)).to(tl.float32)
                    ptr = out_ptr + m.to(tl.int64) * N + row
                store_elementwise(ptr, value.to(ptr.dtype.element_ty), valid, INTERPRET)


@triton.jit
def _prefetch_first_rows(q_base, s_base, row_lo, row_hi, pid_k, n_blk, stride_qn, stride_sn, WPB: tl.constexpr,
                         BLOCKS: tl.constexpr):
    """Ask the L2 for the program's first two tiles (32 rows): their words of the program's ``BLOCKS`` blocks and
    their block scales."""
    blk0 = pid_k * BLOCKS
    n_rows = tl.minimum(row_hi - row_lo, 32)
    row_bytes = tl.cast(stride_qn, tl.int64) * 4
    span = tl.minimum(BLOCKS, n_blk - blk0) * WPB * 4
    prefetch_l2(q_base + row_lo * row_bytes, blk0 * WPB * 4, row_bytes, n_rows, span, 32,
                triton.next_power_of_2(BLOCKS * WPB * 4 // 128 + 2))
    scale_bytes = tl.cast(stride_sn, tl.int64) * 2
    prefetch_l2(s_base + row_lo * scale_bytes, blk0 * 2, scale_bytes, n_rows, tl.minimum(BLOCKS, n_blk - blk0) * 2,
                32, triton.next_power_of_2(BLOCKS * 2 // 128 + 2))


@triton.jit
def _tc_gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] bfloat16 rotated activations (16-byte aligned rows)
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes (16-byte aligned rows)
    s_ptr,  # [N, K_PAD // 128] float16 block scales
    c_ptr,  # [2**BITS] float32 codebook
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N] output
    ws_ptr,  # [n_slices, M, N] float32 partial sums: a slice per warp along K, per program with WARP_SUM (WORKSPACE)
    count_ptr,  # [>= cdiv(N, ROWS) * cdiv(M, 8 * MG)] int32 arrival counters, zero between calls (SPLIT)
    # dimensions
    M,
    N,
    K_PAD,
    ROWS,  # weight rows per program, a multiple of 16
    # strides, in elements
    stride_xm,
    stride_qn,
    stride_sn,
    # meta-parameters
    BITS: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    WORKSPACE: tl.constexpr,
    SPLIT: tl.constexpr,
    INTERPRET: tl.constexpr,
    KB: tl.constexpr,
    MG: tl.constexpr,
    NW: tl.constexpr,
    WARP_SUM: tl.constexpr,
    PDL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    T: tl.constexpr = 32 * NW
    WPB: tl.constexpr = BLOCK * BITS // 32  # words per block
    PAIRED: tl.constexpr = W1 == 1
    i = tl.arange(0, T)
    g = (i % 32) // 4  # the thread's MMA row group: weight rows g, g + 8; activation row g
    t = i % 4  # its quarter of each block: positions 32 t .. 32 t + 31
    part = pid_k * NW + i // 32  # the warp's slice of K: blocks part * KB .. part * KB + KB - 1
    n_blk = K_PAD // BLOCK
    q_base = q_ptr.to(tl.int64, bitcast=True)
    s_base = s_ptr.to(tl.int64, bitcast=True)
    c_base = c_ptr.to(tl.int64, bitcast=True)
    x_base = x_ptr.to(tl.int64, bitcast=True)
    m0 = pid_m * 8 * MG
    row_lo = pid_n * ROWS
    row_hi = tl.minimum(row_lo + ROWS, N)
    # Programmatic dependent launch (see hlwq_ops.kernels.common): the first tiles asked of the L2 while the kernel
    # before this one finishes, everything read after the wait.
    if PDL:
        _prefetch_first_rows(q_base, s_base, row_lo, row_hi, pid_k, n_blk, stride_qn, stride_sn, WPB, NW * KB)
    wait_for_inputs(PDL)
    c_lane = _lane_bf16(i, c_base, BITS, INTERPRET)

    # The first rows' words are requested before the activations, which load while they arrive.
    ahead = _fetch_tile(q_base, s_base, row_lo, row_hi, part, n_blk, g, t, stride_qn, stride_sn, WPB, W1, KB,
                        INTERPRET)
    xs = ()
    for mg in tl.static_range(MG):
        for b in tl.static_range(KB):
            xs = xs + (_activations(x_base, m0 + 8 * mg + g, M, part * KB + b, n_blk, t, stride_xm, INTERPRET),)

    for row0 in range(row_lo, row_hi, 16):
        words = ahead
        # The next rows, in a block of their own at the top of the body. Without the branch ptxas sinks the loads
        # to the end of the body, where the loop-carried copy of their registers waits for them: the load
        # latency exposed once per tile, a third of the stall samples (ncu); 0.5-9% faster at M = 4 and 8
        # (benchmarks/NOTES.md, session 13). Requesting rows two tiles ahead instead was slower on every shape
        # timed (session 12).
        if row0 + 16 < row_hi:
            ahead = _fetch_tile(q_base, s_base, row0 + 16, row_hi, part, n_blk, g, t, stride_qn, stride_sn, WPB, W1,
                                KB, INTERPRET)
        _tile(words, xs, row0, row_hi, m0, M, N, part, pid_k, g, t, c_base, c_lane, ws_ptr, out_ptr, bias_ptr, BITS,
              W1, O1, PAIRED, KB, MG, NW, WARP_SUM, WORKSPACE, HAS_BIAS, INTERPRET)

    release_dependents(PDL)  # the next kernel may launch once every program is past its rows (see the GEMV)
    if WORKSPACE:  # the partials of these rows are summed by the last program to finish
        n_parts = tl.num_programs(1) * (1 if WARP_SUM else NW)
        m_hi = tl.minimum(m0 + 8 * MG, M)
        if SPLIT:
            counter = count_ptr + pid_n * tl.num_programs(2) + pid_m
            if arrive(counter, tl.num_programs(1)):
                for m in range(m0, m_hi):
                    sum_partials(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, M, N, n_parts, HAS_BIAS)
                reset_counter(counter)
        else:
            tl.debug_barrier()
            for m in range(m0, m_hi):
                sum_partials(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, M, N, n_parts, HAS_BIAS)


def tc_gemv_ref(xr, qdata, scale, bias, bits, codebook=None) -> torch.Tensor:
    """Plain-torch equivalent of :func:`tc_gemv`, in float64 (the test oracle): :func:`~.gemv.gemv_ref` on the
    bfloat16 activations with each centroid rounded to bfloat16, as the kernel multiplies them."""
    c16 = kernel_codebook(bits, codebook, qdata.device).bfloat16().float()
    return gemv_ref(xr.bfloat16(), qdata, scale, bias, bits, 128, c16)


def tc_gemv(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: dict,
    dependent: bool = False,
) -> torch.Tensor:
    """Launch the tensor-core GEMV. Shapes are checked by the caller (``hlwq_ops.ops``).

    Args:
        xr: (M, K_pad) bfloat16 rotated activations, contiguous.
        qdata: (N, K_pad * bits / 8) uint8; scale: (N, K_pad / 128) float16.
        config: ``KB`` (blocks of K per warp), ``MG`` (groups of 8 activation
            rows per program, 1 or 2), ``ROWS`` (weight rows per program, a
            multiple of 16), ``num_warps``, optionally ``WARP_SUM`` (sum the
            program's warps before the store) and ``maxnreg`` (a
            register cap per thread: more programs per SM).
        dependent: launch with programmatic dependent launch by default (waiting for the kernel before it in
            ``griddepcontrol.wait``); ``HLWQ_PDL`` overrides it and it is off but on sm_90 and newer
            (:func:`.common.pdl`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    if not supports(bits, block_size):
        raise ValueError(f"the tensor-core GEMV serves 4/5-bit codes in blocks of 128, got {bits} bits, "
                         f"blocks of {block_size}")
    if xr.dtype != torch.bfloat16 or not xr.is_contiguous():
        raise ValueError(f"the tensor-core GEMV takes contiguous bfloat16 activations, got {xr.dtype} "
                         f"with strides {xr.stride()}")
    if not aligned(qdata) or xr.data_ptr() % 16:
        raise ValueError("the tensor-core GEMV reads 16-byte aligned rows of codes and activations, got codes at "
                         f"{qdata.data_ptr()} with strides {qdata.stride()}, activations at {xr.data_ptr()}")
    words = as_words(qdata)
    if words.numel() >= 2**32:
        raise ValueError(f"the tensor-core GEMV addresses up to 2**32 words of codes, got {words.numel()}")
    scale, bias = unit_stride(scale), unit_stride(bias)
    plan = plan_for(xr.shape, xr.dtype, xr.device, words, scale, bias, bits, block_size, config, dependent)
    return launch_split_plan(plan, xr, words, scale, bias, kernel_codebook(bits, codebook, qdata.device), out_dtype)


def plan_for(x_shape: tuple[int, int], x_dtype: torch.dtype, device: torch.device, words: torch.Tensor,
             scale: torch.Tensor, bias: torch.Tensor | None, bits: int, block_size: int, config: dict,
             dependent: bool = False) -> SplitPlan:
    """The plan of a :func:`tc_gemv` call on contiguous bfloat16 activations of ``x_shape`` (``words``: the codes
    viewed as int32; ``scale`` and ``bias`` with unit stride; the rest as it takes them), which
    :func:`.common.launch_split_plan` runs. Made before the activations are (by ``kernels.linear``, resolving a
    call), it takes their shape; ``x_dtype`` (always bfloat16 here) only gives the three tensor-core kernels'
    ``plan_for`` one signature."""
    M, k_pad = x_shape
    return _plan(M, words.shape[0], k_pad, bits, block_size, config_key(config), bias is not None, device,
                 pdl(device, default=dependent), (k_pad, words.stride(0), scale.stride(0)))


@plan_cache
def _plan(M: int, N: int, k_pad: int, bits: int, block_size: int, config: tuple, has_bias: bool,
          device: torch.device, dependent: bool, strides: tuple[int, int, int]) -> SplitPlan:
    """The launch of :func:`tc_gemv` for this call signature (``config``: :func:`.launch.config_key`), checked once."""
    config = config_of(config)
    if config["ROWS"] % 16:
        raise ValueError(f"ROWS must be a multiple of 16, got {config}")
    if config["MG"] not in (1, 2):
        raise ValueError(f"MG (groups of 8 activation rows per program) must be 1 or 2, got {config}")
    nw, kb = config["num_warps"], config["KB"]
    n_kprog = cdiv(k_pad // block_size, nw * kb)
    row_programs = cdiv(N, config["ROWS"])
    m_programs = cdiv(M, 8 * config["MG"])
    warp_sum = config.get("WARP_SUM", False)
    n_slices = n_kprog if warp_sum else n_kprog * nw
    p = planes(bits)
    launch = Launch(
        _tc_gemv_kernel, (row_programs, n_kprog, m_programs), (M, N, k_pad, config["ROWS"], *strides),
        dict(BITS=bits, W1=p["W1"], O1=p["O1"], HAS_BIAS=has_bias, WORKSPACE=n_slices > 1, SPLIT=n_kprog > 1,
             INTERPRET=device.type == "cpu", KB=kb, MG=config["MG"], NW=nw, WARP_SUM=warp_sum, PDL=dependent),
        dict(num_warps=nw, num_stages=1, **launch_options(dependent),
             **({"maxnreg": config["maxnreg"]} if config.get("maxnreg") else {})),
    )
    return SplitPlan((M, N), (n_slices, M, N) if n_slices > 1 else None,
                     row_programs * m_programs if n_kprog > 1 else 0, launch)
