"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Activation-stationary. A program owns one activation row (two with ``MB``),
one slice of ``BK`` positions of K and a range of ``ROWS`` weight rows (any
number). It requests its first rows' words, loads (and, with ROTATE, rotates)
its slice of the activations into registers while they arrive, then streams
its rows ``R`` at a time: per row the words of the slice (plane 0 by one
vectorized ``tl.load``, the narrower planes and the block scales by gathers,
see :mod:`.decode`), decoded
and multiplied against the registers, summed along K. Nothing but the weight
and its scales is read in the loop. The source requests the next rows' words
before decoding the current ones, but ptxas moves those loads to the end of the
body, next to their first use (see ``EARLY``).

Tile ``[R, C]``: a row and one plane-0 word per element (``32 / W0`` codes),
``C = 32 * VEC`` words per row; Triton gives each thread 16-byte vectors (4
words). With VEC = 4 a warp spans a row's slice and the warps take different
rows (row sums stay within a warp); with VEC = 16 the four warps sit side by
side along K (row sums cross warps through shared memory), so one slice covers
K = 4096 at Q4/Q5 and such layers need no split-K. The slices' partial sums go
to a float32 workspace ``[n_slices, M, N]``; the last program to finish a row
range (an atomic arrival counter per range, reset by that program) sums them,
adds the bias and writes the output, so a call is one kernel. With a single
slice the kernel writes the output directly.

``WARP_PARTS`` (config, default 1): the row sums are cut into that many parts
along the tile's columns -- with VEC = 16 and four parts, each warp's own sum,
no shared memory or barrier in the loop -- stored as partials beside the
slices' and added once by the program that sums the row range (after one CTA
barrier when K is a single slice, else the last slice to arrive). On an H200
it beat the earlier configs by 8-9% at Q4 and 0-3% at Q5 on K = 4096 shapes
and lost on K = 14336 (``benchmarks/diag_warp_parts.py``); the tuner offers it.

``EARLY`` (config, default off): the next rows' loads in a branch of their own
at the top of the loop body (``if row0 + R < row_hi``), which keeps ptxas from
moving them to its end, where the next iteration's first decode waits for
them. It costs registers (Q5 VEC = 4: 72 -> 96) and was faster only at Q5:
on the small shapes (2-5% on 4096 x 4096 and 1024 x 4096, H200, session 13)
and at M = 1 on the large ones (2-10% on two H100s, session 68; it lost there
on the H200 of session 13), by ``benchmarks/diag_early.py``; the tuner offers
it at Q5 on the small shapes and at M = 1 on the large ones.

``MB`` (config, default 1): activation rows per program. With MB = 2 a
program keeps two rows' slices in registers and multiplies each decoded
centroid into both, so M = 2 decodes the weight once instead of twice (H200,
Q5 14336 x 4096 at M = 2: 35.6 -> 27.2 us; ``benchmarks/diag_rows.py``).

``glu`` (a launch argument, with ROTATE): the activation rows hold a gate and
an up half, multiplied as ``silu(gate) * up`` in the prologue before the
rotation: a gated MLP's down projection on its gate-up GEMV's output, without
a kernel for the product between the two (:func:`hlwq_ops.kernels.linear_glu`).

Decoding per code (:func:`.decode.code_at`): one shift and one warp shuffle
(bits <= 5), then an FMA per activation row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .common import (
    SplitPlan,
    arrive,
    as_words,
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
from .decode import (
    centroid_at,
    fetch_rows,
    gather16,
    gather32,
    lane_codebook,
    row_geometry,
    rows_sources,
    store_elementwise,
)
from .launch import Launch, cdiv, config_key, config_of, plan_cache

__all__ = ["MAX_GROUP", "can_rotate", "gemv", "gemv_group", "gemv_plan", "gemv_ref", "group_plan", "launch_group",
           "plan_for", "slice_codes", "unused_members", "unused_norm"]

MAX_GROUP = 3  # weights one launch reads (the kernel's pointer arguments)


@triton.jit
def _centroids4(s0, s1, s2, a: tl.constexpr, c_base, c_lane, BITS: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr, SHUFFLE: tl.constexpr,
                INTERPRET: tl.constexpr):
    """Centroids of codes ``a .. a + 3`` of each element."""
    return (centroid_at(s0, s1, s2, a, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET),
            centroid_at(s0, s1, s2, a + 1, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET),
            centroid_at(s0, s1, s2, a + 2, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET),
            centroid_at(s0, s1, s2, a + 3, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET))


@triton.jit
def _fma4(p, xs, a: tl.constexpr, c):
    """``p + sum_j xs[a + j] * c_j``, four FMAs: the activations of codes ``a .. a + 3`` times their centroids."""
    c0, c1, c2, c3 = c
    p += xs[a] * c0
    p += xs[a + 1] * c1
    p += xs[a + 2] * c2
    p += xs[a + 3] * c3
    return p


@triton.jit
def _butterfly(v, N: tl.constexpr, S: tl.constexpr):
    """One FWHT stage on a flat [N] vector: ``(u, w) -> (u + w, u - w)`` for pairs ``S`` apart."""
    t = tl.permute(tl.reshape(v, (N // (2 * S), 2, S)), (0, 2, 1))
    u, w = tl.split(t)
    return tl.reshape(tl.permute(tl.join(u + w, u - w), (0, 2, 1)), (N,))


@triton.jit
def _rounded(v, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Float32 ``v`` rounded to ``DTYPE``'s precision (to nearest, ties to even), as float32. The GPU converts so
    (``cvt.rn``; LLVM makes some rounded products and sums bfloat16 arithmetic, with the same bits); the
    interpreter's bfloat16 conversion truncates (Triton 3.6, and with ``fp_downcast_rounding="rtne"`` it did not
    give torch's values either), so there bfloat16 is rounded by its bits (about seven instructions an element on
    sm_90, which on the GPU were 535 of the 822 instructions the norm added before the GEMV's loop)."""
    if INTERPRET and DTYPE == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(v != v, v, bits.to(tl.float32, bitcast=True))  # (a NaN stays one)
    else:
        return v.to(DTYPE).to(tl.float32)


@triton.jit
def _added(x_row, r_row, k, K_X, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """``x + residual`` at positions ``k`` of a row, rounded to ``DTYPE`` as eager PyTorch rounds it, as float32
    (zero past ``K_X``)."""
    x = tl.load(x_row + k, mask=k < K_X, other=0.0).to(tl.float32)
    return _rounded(x + tl.load(r_row + k, mask=k < K_X, other=0.0).to(tl.float32), DTYPE, INTERPRET)


@triton.jit
def _squares(x_row, r_row, K_X, BK: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """The sum of squares of ``x + residual`` over a whole row, ``BK`` positions at a time: what a program that
    holds only a slice of the row needs for its norm (split K)."""
    total = tl.zeros([BK], dtype=tl.float32)
    for k0 in range(0, K_X, BK):
        h = _added(x_row, r_row, k0 + tl.arange(0, BK), K_X, DTYPE, INTERPRET)
        total += h * h
    return tl.sum(total, axis=0)


# The forms of transformers' RMSNorm that the GEMV's prologue computes (its ADD_NORM): Llama's (Qwen3's, Mistral's),
# ``w * normed`` with the normed row rounded first, and Qwen3.5's (Qwen3-Next's, Gemma 1-3's), ``(1 + w) * normed`` in
# float32, rounded once.
NORM_LLAMA = 1
NORM_UNIT_OFFSET = 2


@triton.jit
def _added_and_normed(x_row, r_row, w_ptr, h_row, k, K_X, store_h, BK: tl.constexpr, EPS: tl.constexpr,
                      SPLIT: tl.constexpr, FORM: tl.constexpr, INTERPRET: tl.constexpr):
    """Transformers' RMSNorm of ``h = x + residual`` at positions ``k``, as float32, of the ``FORM`` given
    (``NORM_LLAMA``: ``w * (h * rsqrt(mean(h^2) + EPS))``, ``NORM_UNIT_OFFSET``: ``(1 + w) * (h * rsqrt(...))``), each
    product rounded to the row's dtype where eager PyTorch rounds it (the mean in float32, its sum in the kernel's
    order; on a GPU the division and the square root approximate, to a few ulps). A program with ``store_h`` also
    stores its slice of ``h``, which the layer adds its next output to."""
    DTYPE: tl.constexpr = x_row.dtype.element_ty
    h = _added(x_row, r_row, k, K_X, DTYPE, INTERPRET)
    if store_h:
        tl.store(h_row + k, h.to(h_row.dtype.element_ty), mask=k < K_X)
    if SPLIT:
        squares = _squares(x_row, r_row, K_X, BK, DTYPE, INTERPRET)
    else:  # (the slice is the whole row)
        squares = tl.sum(h * h, axis=0)
    normed = h * tl.rsqrt(squares / tl.maximum(K_X, 1) + EPS)  # (K_X = 0: MB's absent row)
    w = tl.load(w_ptr + k, mask=k < K_X, other=0.0).to(tl.float32)
    if FORM == 2:  # NORM_UNIT_OFFSET
        return _rounded(normed * (1.0 + w), DTYPE, INTERPRET)
    return _rounded(w * _rounded(normed, DTYPE, INTERPRET), DTYPE, INTERPRET)


@triton.jit
def _activations(x_row, k0, K_X, C: tl.constexpr, PER_WORD: tl.constexpr, B: tl.constexpr, ROTATE: tl.constexpr,
                 GLU: tl.constexpr, r_row, w_ptr, h_row, store_h, ADD_NORM: tl.constexpr, EPS: tl.constexpr,
                 SPLIT: tl.constexpr, INTERPRET: tl.constexpr):
    """The slice's activations, [C, PER_WORD] float32 (word, code); zero past ``K_X``.

    With GLU the row holds a gate and an up half, ``K_X`` each, and the
    activations are ``silu(gate) * up``, each rounded to the row's dtype as
    eager PyTorch rounds them. With ADD_NORM they are the RMSNorm of the row
    plus its residual row, of the form ADD_NORM names (see
    :func:`_added_and_normed`). With ROTATE the raw
    activations are rotated here, blockwise and unnormalized (``sqrt(B) * H_B
    x``): the stages move values between threads, which costs little once per
    program.
    """
    BK: tl.constexpr = C * PER_WORD
    k = k0 + tl.arange(0, BK)
    if ADD_NORM:
        v = _added_and_normed(x_row, r_row, w_ptr, h_row, k, K_X, store_h, BK, EPS, SPLIT, ADD_NORM, INTERPRET)
    else:
        v = tl.load(x_row + k, mask=k < K_X, other=0.0)
    if GLU:
        gate = v.to(tl.float32)
        up = tl.load(x_row + K_X + k, mask=k < K_X, other=0.0).to(tl.float32)
        v = _rounded(_rounded(gate / (1.0 + tl.exp(-gate)), v.dtype, INTERPRET) * up, v.dtype, INTERPRET)
    v = v.to(tl.float32)
    if ROTATE:
        for stage in tl.static_range(11):
            if (1 << stage) < B:
                v = _butterfly(v, BK, 1 << stage)
    return tl.reshape(v, (C, PER_WORD))


@triton.jit
def _codes4(X, C: tl.constexpr):
    """Columns 0..3 of [C, 4] as [1, C] tensors."""
    even, odd = tl.split(tl.reshape(X, (C, 2, 2)))
    x0, x2 = tl.split(even)
    x1, x3 = tl.split(odd)
    return x0[None, :], x1[None, :], x2[None, :], x3[None, :]


@triton.jit
def _codes8(X, C: tl.constexpr):
    """Columns 0..7 of [C, 8] as [1, C] tensors."""
    even, odd = tl.split(tl.reshape(X, (C, 4, 2)))
    x0, x2, x4, x6 = _codes4(even, C)
    x1, x3, x5, x7 = _codes4(odd, C)
    return x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _codes(X, C: tl.constexpr, PER_WORD: tl.constexpr):
    """Columns of [C, PER_WORD] as a tuple of [1, C] tensors, one per code of an element."""
    if PER_WORD == 4:
        xs = _codes4(X, C)
    elif PER_WORD == 8:
        xs = _codes8(X, C)
    else:
        xs = _codes16(X, C)
    return xs


@triton.jit
def _codes16(X, C: tl.constexpr):
    """Columns 0..15 of [C, 16] as [1, C] tensors."""
    even, odd = tl.split(tl.reshape(X, (C, 8, 2)))
    x0, x2, x4, x6, x8, x10, x12, x14 = _codes8(even, C)
    x1, x3, x5, x7, x9, x11, x13, x15 = _codes8(odd, C)
    return x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15


@triton.jit
def _row_sums(p, out_row, rows, row_hi, row_last, M, N, bias_ptr, bias_base, NORM: tl.constexpr, R: tl.constexpr,
              C: tl.constexpr, WORKSPACE: tl.constexpr, HAS_BIAS: tl.constexpr, WARP_PARTS: tl.constexpr,
              INTERPRET: tl.constexpr, PLAIN: tl.constexpr):
    """Store the row sums of ``p`` ([R, C], scaled) for ``rows`` below ``row_hi`` at ``out_row`` (``row_last``: the
    program's last row, where the bias is read for rows past it).

    With WARP_PARTS > 1, one partial per part of the tile's columns (with VEC =
    16, each warp's own sum), ``M * N`` apart; else the sum, plus the bias when
    it goes straight to the output.
    """
    if WARP_PARTS > 1:
        part = tl.sum(tl.reshape(p, (R, WARP_PARTS, C // WARP_PARTS)), axis=2) * NORM  # [R, PARTS]
        w = tl.arange(0, WARP_PARTS)[None, :]
        part_ptr = out_row + w.to(tl.int64) * tl.cast(M, tl.int64) * N + rows
        store_elementwise(part_ptr, part, tl.broadcast_to(rows < row_hi, (R, WARP_PARTS)), PLAIN)
    else:
        # [R], in the reduction's layout: one store per row and thread (a [R, 1] tensor held four copies per
        # thread, each stored; offline SASS, Q5 VEC = 4 R = 8: 8 -> 2 stores, 319 -> 313 loop instructions)
        y = tl.sum(p, axis=1) * NORM
        rows = tl.reshape(rows, (R,))
        if not WORKSPACE and HAS_BIAS:
            b_type: tl.constexpr = bias_ptr.dtype.element_ty
            if b_type.primitive_bitwidth == 16:
                b = gather16(bias_base, tl.minimum(rows, row_last), INTERPRET).to(b_type, bitcast=True)
            else:
                b = gather32(bias_base, tl.minimum(rows, row_last), INTERPRET).to(b_type, bitcast=True)
            y += b.to(tl.float32)
        store_elementwise(out_row + rows, y.to(out_row.dtype.element_ty), rows < row_hi, PLAIN)


@triton.jit
def _sum_rows(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, second, M, N, n_parts, HAS_BIAS: tl.constexpr,
              MB: tl.constexpr):
    """:func:`~hlwq_ops.kernels.common.sum_partials` for the program's activation rows: ``m``, and ``m + 1`` with
    MB = 2 if ``second``."""
    sum_partials(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, M, N, n_parts, HAS_BIAS)
    if MB == 2:
        if second:
            sum_partials(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m + 1, M, N, n_parts, HAS_BIAS)


@triton.jit
def _prefetch_first_rows(q_base, s_base, row_lo, row_hi, pid_k, K_PAD, stride_qn, stride_sn, BITS: tl.constexpr,
                         B: tl.constexpr, W0: tl.constexpr, C: tl.constexpr, FIRST: tl.constexpr):
    """Ask the L2 for the program's first ``FIRST`` rows: their words of the slice (plane 0 and the rest of its
    blocks) and their block scales."""
    PW0: tl.constexpr = B * W0 // 32  # plane-0 words per block
    # words of a row in the slice: exact when it holds whole blocks (C a multiple of PW0), else a span from the
    # slice's first word that covers its plane-0 words (a hint: lines past them cost a little bandwidth)
    WORDS: tl.constexpr = C * BITS // W0
    SCALES: tl.constexpr = (C + PW0 - 1) // PW0  # blocks in the slice
    word0 = pid_k * C
    first = ((word0 // PW0) * (B * BITS // 32) + word0 % PW0) * 4
    n_rows = tl.minimum(row_hi - row_lo, FIRST)
    row_bytes = tl.cast(stride_qn, tl.int64) * 4
    span = tl.minimum(WORDS * 4, K_PAD * BITS // 8 - first)
    prefetch_l2(q_base + row_lo * row_bytes, first, row_bytes, n_rows, span, FIRST,
                triton.next_power_of_2(WORDS * 4 // 128 + 2))
    scale_bytes = tl.cast(stride_sn, tl.int64) * 2
    prefetch_l2(s_base + row_lo * scale_bytes, (word0 // PW0) * 2, scale_bytes, n_rows,
                tl.minimum(SCALES * 2, K_PAD // B * 2 - (word0 // PW0) * 2), FIRST,
                triton.next_power_of_2(SCALES * 2 // 128 + 2))


@triton.jit
def _member(pid_n, q_ptr, s_ptr, c_ptr, bias_ptr, q1_ptr, s1_ptr, c1_ptr, bias1_ptr, q2_ptr, s2_ptr, c2_ptr, bias2_ptr,
            N, ROWS, END0, END1, stride_qn, stride_sn, HAS_BIAS: tl.constexpr):
    """The weight a program of a group reads (each weight's rows take ``cdiv(rows, ROWS)`` programs, in order) and
    the program's rows ``row_lo .. row_hi`` in the output's columns.

    The weight's pointers come back moved back by its first output column's rows, so that the kernel addresses its
    rows, scales and bias by output column as it does a single weight's.
    """
    if q1_ptr.dtype.element_ty == tl.uint8:  # (as the first weight's, read as int32 words)
        q1_ptr = q1_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
        q2_ptr = q2_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    P0 = tl.cdiv(END0, ROWS)
    P1 = P0 + tl.cdiv(END1 - END0, ROWS)
    second = pid_n >= P0
    third = pid_n >= P1
    start = tl.where(third, END1, tl.where(second, END0, 0))
    end = tl.where(third, N, tl.where(second, END1, END0))
    row_lo = start + (pid_n - tl.where(third, P1, tl.where(second, P0, 0))) * ROWS
    row_hi = tl.minimum(row_lo + ROWS, end)
    back = tl.cast(start, tl.int64)
    q_ptr = tl.where(third, q2_ptr, tl.where(second, q1_ptr, q_ptr)) - back * stride_qn
    s_ptr = tl.where(third, s2_ptr, tl.where(second, s1_ptr, s_ptr)) - back * stride_sn
    c_ptr = tl.where(third, c2_ptr, tl.where(second, c1_ptr, c_ptr))
    if HAS_BIAS:  # (else the pointers stand in for it, of any type)
        bias_ptr = tl.where(third, bias2_ptr, tl.where(second, bias1_ptr, bias_ptr)) - back
    return q_ptr, s_ptr, c_ptr, bias_ptr, row_lo, row_hi


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations, or [M, K_X] raw ones (ROTATE), or [M, 2 * K_X] gate, up (GLU)
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes, or the [N, K_PAD * BITS // 8] uint8 codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    c_ptr,  # [2**BITS] float32 codebook
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N] output
    ws_ptr,  # [n_slices * WARP_PARTS, M, N] float32 partial sums (WORKSPACE)
    count_ptr,  # [>= row programs * cdiv(M, MB)] int32 arrival counters, zero between calls (split-K)
    # GROUP > 1: the second and third weights' codes, scales, codebooks and biases (GROUP = 2: the third's are unused)
    q1_ptr,
    s1_ptr,
    c1_ptr,
    bias1_ptr,
    q2_ptr,
    s2_ptr,
    c2_ptr,
    bias2_ptr,
    # ADD_NORM: the residual rows, the norm's weight and the rows plus their residual (an output: [M, K_X])
    r_ptr,
    nw_ptr,
    h_ptr,
    # dimensions
    M,
    N,  # output columns: the weights' rows together
    K_PAD,
    K_X,  # activations past K_X are zero
    ROWS,  # weight rows per program
    END0,  # GROUP > 1: where the first weight's rows end in the output; END1: the second's
    END1,
    # strides, in elements
    stride_xm,
    stride_qn,
    stride_sn,
    stride_rm,  # (of the residual rows)
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
    WORKSPACE: tl.constexpr,
    SPLIT: tl.constexpr,
    ROTATE: tl.constexpr,
    GLU: tl.constexpr,  # (with ROTATE) the activations are silu(gate) * up of x's two halves
    ADD_NORM: tl.constexpr,  # (with ROTATE) 0, or the activations are the RMSNorm of x plus the residual rows, of
    # this form (NORM_LLAMA, NORM_UNIT_OFFSET)
    EPS: tl.constexpr,  # (ADD_NORM) the norm's epsilon
    WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
    R: tl.constexpr,
    VEC: tl.constexpr,
    WARP_PARTS: tl.constexpr,
    MB: tl.constexpr,
    EARLY: tl.constexpr,
    PDL: tl.constexpr,
    PLAIN_STORES: tl.constexpr,  # row sums by tl.store, which Inductor's mutation analysis reads (see gemv_plan)
    GROUP: tl.constexpr,  # weights sharing the activations (1 to 3): their outputs side by side
):
    if q_ptr.dtype.element_ty == tl.uint8:  # (the packed codes as given: read as int32 words)
        q_ptr = q_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    PLAIN: tl.constexpr = PLAIN_STORES or INTERPRET  # (the interpreter runs no PTX)
    pid_n = tl.program_id(0)
    if GROUP > 1:
        q_ptr, s_ptr, c_ptr, bias_ptr, row_lo, row_hi = _member(
            pid_n, q_ptr, s_ptr, c_ptr, bias_ptr, q1_ptr, s1_ptr, c1_ptr, bias1_ptr, q2_ptr, s2_ptr, c2_ptr,
            bias2_ptr, N, ROWS, END0, END1, stride_qn, stride_sn, HAS_BIAS)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    m = pid_m * MB  # the first of the program's MB activation rows
    C: tl.constexpr = 32 * VEC  # plane-0 words of a row in the slice
    PER_WORD: tl.constexpr = 32 // W0  # codes per element
    SHUFFLE: tl.constexpr = BITS <= 5
    PAIRED: tl.constexpr = SHUFFLE and W0 == 4 and W1 == 1 and W2 == 0

    # Geometry of the slice, [1, C]: block, word offsets, plane-1/2 words and shifts.
    col = tl.arange(0, C)[None, :]
    word = pid_k * C + col  # plane-0 word index along the row (blocks contiguous)
    blk, word_off, p1_off, p2_off, sh1, sh2 = row_geometry(word, K_PAD, BITS, B, W0, W1, O1, W2, O2)

    q_base = q_ptr.to(tl.int64, bitcast=True)
    s_base = s_ptr.to(tl.int64, bitcast=True)
    c_base = c_ptr.to(tl.int64, bitcast=True)
    r = tl.arange(0, R)[:, None]
    if GROUP == 1:
        row_lo = pid_n * ROWS
        row_hi = tl.minimum(row_lo + ROWS, N)

    # With PDL (see hlwq_ops.kernels.common) this kernel may have launched before the kernel before it finished:
    # its first rows are asked of the L2 while that one finishes, and everything is read after the wait.
    if PDL:
        _prefetch_first_rows(q_base, s_base, row_lo, row_hi, pid_k, K_PAD, stride_qn, stride_sn, BITS, B, W0, C, 2 * R)
    wait_for_inputs(PDL)

    # The first rows' words are requested before the prologue, which runs while they arrive.
    last = N - 1 if GROUP == 1 else row_hi - 1  # the last row a program reads (a group's weight ends before N)
    ahead = fetch_rows(q_ptr, q_base, s_base, tl.minimum(row_lo + r, last), stride_qn, stride_sn, word_off,
                       p1_off, p2_off, blk, W1, W2, WIDE, INTERPRET)

    # The slice of activations, in registers for the whole program: row m, and with MB = 2 row m + 1 (zero past M).
    # With ADD_NORM the first row range's programs store the rows plus their residual, a slice each.
    xs = _codes(_activations(x_ptr + m.to(tl.int64) * stride_xm, pid_k * C * PER_WORD, K_X, C, PER_WORD, B, ROTATE,
                             GLU, r_ptr + m.to(tl.int64) * stride_rm, nw_ptr, h_ptr + m.to(tl.int64) * K_X,
                             pid_n == 0, ADD_NORM, EPS, SPLIT, INTERPRET), C, PER_WORD)
    second = m + 1 < M  # with MB = 2: the program has a second row
    if MB == 2:
        m2 = (m + second.to(tl.int32)).to(tl.int64)
        ys = _codes(_activations(x_ptr + m2 * stride_xm, pid_k * C * PER_WORD, tl.where(second, K_X, 0), C, PER_WORD,
                                 B, ROTATE, GLU, r_ptr + m2 * stride_rm, nw_ptr, h_ptr + m2 * K_X, pid_n == 0,
                                 ADD_NORM, EPS, SPLIT, INTERPRET), C, PER_WORD)

    c_lane = lane_codebook(col, c_base, BITS, INTERPRET) if SHUFFLE else col
    bias_base = bias_ptr.to(tl.int64, bitcast=True)
    if WORKSPACE:
        out_row = ws_ptr + (pid_k * WARP_PARTS * M + m).to(tl.int64) * N
    else:
        out_row = out_ptr + m.to(tl.int64) * N
    NORM: tl.constexpr = 1.0 / B if ROTATE else 1.0 / (float(B) ** 0.5)  # codebook (and rotation) scale

    for row0 in range(row_lo, row_hi, R):
        s0, s1, s2, scale = rows_sources(ahead, sh1, sh2, O1, O2, PAIRED, INTERPRET)
        # The next rows, clamped to this program's last (the last iteration re-reads it from L1, not the next
        # program's rows from memory).
        rows_next = tl.minimum(row0 + R + r, row_hi - 1)
        # EARLY: in a block of their own at the top of the body, where ptxas leaves them; else ptxas sinks these
        # loads to the end of the body
        if not EARLY or row0 + R < row_hi:
            ahead = fetch_rows(q_ptr, q_base, s_base, rows_next, stride_qn, stride_sn, word_off, p1_off, p2_off, blk,
                               W1, W2, WIDE, INTERPRET)
        p = tl.zeros([R, C], dtype=tl.float32)
        q = p
        for a in tl.static_range(0, PER_WORD, 4):  # four codes of each element at a time
            c = _centroids4(s0, s1, s2, a, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET)
            p = _fma4(p, xs, a, c)
            if MB == 2:
                q = _fma4(q, ys, a, c)
        rows = row0 + r
        _row_sums(p * scale, out_row, rows, row_hi, last, M, N, bias_ptr, bias_base, NORM, R, C, WORKSPACE,
                  HAS_BIAS, WARP_PARTS, INTERPRET, PLAIN)
        if MB == 2:  # (no rows past M)
            _row_sums(q * scale, out_row + N, rows, tl.where(second, row_hi, 0), last, M, N, bias_ptr, bias_base,
                      NORM, R, C, WORKSPACE, HAS_BIAS, WARP_PARTS, INTERPRET, PLAIN)

    # The next kernel may launch once every program is past its rows (released at the top, the tensor-core paths
    # measured up to 46% slower: benchmarks/NOTES.md, session 14).
    release_dependents(PDL)
    if WORKSPACE:  # the partials of these rows are summed by the last program to finish (no second kernel)
        n_parts = tl.num_programs(1) * WARP_PARTS
        if SPLIT:  # split-K: the last slice to arrive
            counter = count_ptr + pid_n * tl.num_programs(2) + pid_m
            if arrive(counter, tl.num_programs(1)):
                _sum_rows(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, second, M, N, n_parts, HAS_BIAS, MB)
                reset_counter(counter)
        else:  # only this program's warps: a barrier, no counter
            tl.debug_barrier()
            _sum_rows(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, second, M, N, n_parts, HAS_BIAS, MB)


def unused_members(q, s, c, b) -> tuple:
    """What a one-weight launch passes for a group's second and third weights (which the kernel then does not read):
    its own codes, scales, codebook and bias (or stand-in) again."""
    return (q, s, c, b) * (MAX_GROUP - 1)


def unused_norm(x, out) -> tuple:
    """What a launch without ``ADD_NORM`` passes for the residual rows, the norm's weight and the rows plus their
    residual (which the kernel then does not touch)."""
    return x, x, out


class _GemvLaunch(Launch):
    """The GEMV's launch: a call with the eight tensors every split plan's launch takes (one weight) passes
    :func:`unused_members` and :func:`unused_norm`; a group's passes its members, then the norm's three tensors or
    none."""

    __slots__ = ()

    def __call__(self, x, q, s, c, b, out, ws, counters, *rest) -> None:
        members, norm = rest[: 4 * (MAX_GROUP - 1)] or unused_members(q, s, c, b), rest[4 * (MAX_GROUP - 1):]
        super().__call__(x, q, s, c, b, out, ws, counters, *members, *(norm or unused_norm(x, out)))


@plan_cache
def gemv_plan(M: int, k_x: int, N: int, k_pad: int, bits: int, block_size: int, config: tuple,
              rotate: bool, has_bias: bool, wide: bool, device: torch.device, dependent: bool,
              strides: tuple[int, int, int], traced: bool = False, ends: tuple[int, ...] = (),
              glu: bool = False, norm: tuple[float, int, bool] | None = None) -> SplitPlan:
    """The launch of :func:`gemv` for this call signature (``config``: :func:`.launch.config_key`), checked once.

    ``strides``: of the activation rows, of the weight rows in int32 words and of the scale rows. ``traced``: the
    kernel that ``hlwq.linear_compiled`` hands Inductor (``PLAIN_STORES``: its row sums stored by ``tl.store``, which
    Inductor's mutation analysis reads; no PDL). ``ends``: for a group of weights (:func:`gemv_group`), where each
    but the last one's rows end among the ``N`` output columns. ``glu``: the activation rows hold a gate and an up
    half of ``k_x`` positions each, multiplied as ``silu(gate) * up`` before the rotation (``rotate`` then).
    ``norm``: ``(eps, residual row stride, unit_offset)``: the activations are the RMSNorm of the rows plus residual
    rows, which the launch also stores (``ADD_NORM``; ``rotate`` then, not ``glu``), its weight ``w`` (Llama's form)
    or ``1 + w`` (``unit_offset``: Qwen3.5's).
    """
    bounds = (0, *ends, N)
    if len(ends) >= MAX_GROUP or any(lo >= hi for lo, hi in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"a GEMV group takes 1 to {MAX_GROUP} weights of at least one row each, got row ends {ends} "
                         f"of {N}")
    if traced and dependent:
        raise ValueError("a GEMV launched by Inductor launches without PDL")
    if glu and not rotate:
        raise ValueError("the GEMV multiplies a gate and an up half only where it rotates the activations itself: "
                         "glu=True needs rotate=True, got rotate=False")
    if norm is not None and (glu or not rotate or traced or not ends):
        raise ValueError("the GEMV adds a residual and normalizes only for a group of weights whose activations it "
                         f"rotates itself, without glu, launched eagerly: got {len(ends) + 1} weight(s), "
                         f"rotate={rotate}, glu={glu}, traced={traced}")
    config = config_of(config)
    if rotate and not can_rotate(bits, block_size, config):
        raise ValueError(f"the GEMV rotates only whole blocks: block_size {block_size} > slice of {config}")
    parts = config.get("WARP_PARTS", 1)
    if parts < 1 or parts & (parts - 1) or 32 * config["VEC"] % parts:
        raise ValueError(f"WARP_PARTS must be a power of two dividing 32 * VEC, got {config}")
    mb = config.get("MB", 1)
    if mb not in (1, 2):
        raise ValueError(f"MB (activation rows per program) must be 1 or 2, got {config}")
    m_programs = cdiv(M, mb)
    if m_programs > 65535:  # the grid's third dimension; the other paths serve such M (the GEMV only when forced)
        raise ValueError(
            f"the GEMV takes at most {65535 * mb} activation rows per call with MB={mb}, got M={M}; "
            "leave HLWQ_PATH unset (or set it to dequant) for this many rows"
        )
    n_slices = cdiv(k_pad, slice_codes(bits, config["VEC"]))
    row_programs = sum(cdiv(hi - lo, config["ROWS"]) for lo, hi in zip(bounds[:-1], bounds[1:]))
    end0, end1 = (*ends, N, N)[:2]
    launch = _GemvLaunch(
        _gemv_kernel,
        (row_programs, n_slices, m_programs),
        (M, N, k_pad, k_x, config["ROWS"], end0, end1, *strides, 0 if norm is None else norm[1]),
        dict(
            **planes(bits),
            BITS=bits,
            B=block_size,
            HAS_BIAS=has_bias,
            WORKSPACE=n_slices * parts > 1,
            SPLIT=n_slices > 1,
            ROTATE=rotate,
            GLU=glu,
            ADD_NORM=0 if norm is None else NORM_UNIT_OFFSET if norm[2] else NORM_LLAMA,
            EPS=0.0 if norm is None else float(norm[0]),
            WIDE=wide,
            INTERPRET=device.type == "cpu",
            R=config["R"],
            VEC=config["VEC"],
            WARP_PARTS=parts,
            MB=mb,
            EARLY=config.get("EARLY", False),
            PDL=dependent,
            PLAIN_STORES=traced,
            GROUP=len(ends) + 1,
        ),
        dict(num_warps=config["num_warps"], num_stages=1, **launch_options(dependent)),
    )
    return SplitPlan((M, N), (n_slices * parts, M, N) if n_slices * parts > 1 else None,
                     row_programs * m_programs if n_slices > 1 else 0, launch)


def gemv(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: dict,
    rotate: bool = False,
    glu: bool = False,
) -> torch.Tensor:
    """Launch the GEMV. Shapes are checked by the caller (``hlwq_ops.ops``).

    Args:
        x: (M, K_pad) float32 rotated activations, contiguous; with ``rotate``
            the raw (M, K) activations (any float dtype, K <= K_pad, unit
            stride along K), rotated by the kernel; with ``glu`` too, (M, 2 K)
            holding a gate and an up half, multiplied as ``silu(gate) * up``
            by the kernel before it rotates them.
        qdata: (N, K_pad * bits / 8) uint8; scale: (N, K_pad / B) float16.
        config: ``VEC`` (a slice is ``32 * VEC`` plane-0 words of a row),
            ``R`` (rows per iteration), ``ROWS`` (rows per program, any
            number), ``num_warps`` (see :mod:`hlwq_ops.kernels.tuning`),
            optionally ``WARP_PARTS``, ``MB`` and ``EARLY`` (see the module
            docstring).

    Returns:
        (M, N) in ``out_dtype``.
    """
    words = as_words(qdata)
    scale, bias = unit_stride(scale), unit_stride(bias)  # indexed as packed rows / a packed vector
    plan = plan_for(x, words, scale, bias, bits, block_size, config, rotate, glu=glu)
    return launch_split_plan(plan, x, words, scale, bias, kernel_codebook(bits, codebook, qdata.device), out_dtype)


def gemv_group(
    x: torch.Tensor,
    weights: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
    bits: int,
    block_size: int,
    out_dtype: torch.dtype,
    config: dict,
) -> torch.Tensor:
    """One launch of the GEMV for two or three weights that multiply the same activations (a layer's q, k and v
    projections, say): their outputs side by side, (M, sum of their rows). The kernel rotates ``x``.

    Args:
        x: the raw (M, K) activations (unit stride along K).
        weights: ``(qdata, scale, bias, codebook)`` of each, as :func:`gemv` takes them, all of one width (the same
            row strides of codes and of scales), with biases of one dtype or none.
        config: as :func:`gemv`'s; its slice holds whole blocks (:func:`can_rotate`).
    """
    return launch_group(group_plan(x, weights, bits, block_size, config), bits, x, weights, out_dtype)


def group_plan(x: torch.Tensor, weights: Sequence[tuple], bits: int, block_size: int, config: dict,
               norm: tuple[float, int, bool] | None = None) -> SplitPlan:
    """The plan of :func:`gemv_group`'s launch, after checking that one launch can read the weights (``norm``: as
    :func:`gemv_plan` takes it)."""
    if not 2 <= len(weights) <= MAX_GROUP:
        raise ValueError(f"a GEMV group takes 2 to {MAX_GROUP} weights, got {len(weights)}")
    words = [as_words(q) for q, _, _, _ in weights]
    scales = [unit_stride(s) for _, s, _, _ in weights]  # (as launch_group passes them)
    strides = {(w.stride(0), s.stride(0), s.shape[1]) for w, s in zip(words, scales)}
    biases = [None if b is None else b.dtype for _, _, b, _ in weights]
    if len(strides) > 1 or len(set(biases)) > 1:
        raise ValueError("the weights of a GEMV group need the same width, row strides (codes; scales) and biases of "
                         f"one dtype or none; got (code row stride, scale row stride, blocks) {sorted(strides)} and "
                         f"biases {biases}")
    rows = [w.shape[0] for w in words]
    ends = tuple(sum(rows[: i + 1]) for i in range(len(rows) - 1))
    return plan_for(x, words[0], scales[0], unit_stride(weights[0][2]), bits, block_size, config, True, sum(rows),
                    ends, norm=norm)


def launch_group(plan: SplitPlan, bits: int, x: torch.Tensor, weights: Sequence[tuple], out_dtype: torch.dtype,
                 norm: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = ()) -> torch.Tensor:
    """:func:`gemv_group`'s launch of ``plan``: :func:`group_plan`'s for weights of these layouts, which this does not
    check again (a resolved call's signature holds them). ``norm``, with a plan that adds and normalizes: the
    residual rows, the norm's weight and the (M, K) output for the rows plus their residual."""
    planned = bool(plan.launch.constexprs["ADD_NORM"])
    if bool(norm) != planned or len(norm) not in (0, 3):
        raise ValueError("a GEMV group's launch takes the norm's three tensors (residual rows, weight, output for the "
                         f"sum) exactly when its plan adds and normalizes: plan with a norm: {planned}, got "
                         f"{len(norm)} tensor(s)")
    operands = [(as_words(q), unit_stride(s), unit_stride(b), kernel_codebook(bits, c, q.device))
                for q, s, b, c in weights]
    words, scale, bias, table = operands[0]
    members = [(q, s, c, s if b is None else b) for q, s, b, c in operands[1:]]
    members = (members * MAX_GROUP)[: MAX_GROUP - 1]  # (a group of two: its second weight again as the unused third)
    return launch_split_plan(plan, x, words, scale, bias, table, out_dtype, sum(members, ()) + tuple(norm))


def plan_for(x: torch.Tensor, words: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, bits: int,
             block_size: int, config: dict, rotate: bool = False, rows: int | None = None,
             ends: tuple[int, ...] = (), glu: bool = False, norm: tuple[float, int, bool] | None = None) -> SplitPlan:
    """:func:`gemv_plan` for :func:`gemv`'s operands (``words``: the codes viewed as int32; ``scale`` and ``bias``
    with unit stride); for a group (:func:`gemv_group`), the first weight's, with all the weights' ``rows`` and
    ``ends``; with ``glu``, ``x``'s rows a gate and an up half; ``norm`` as :func:`gemv_plan` takes it."""
    M, width = x.shape
    if glu and width % 2:
        raise ValueError(f"with glu, x's rows hold a gate and an up half of one width each: got rows of {width}")
    N = words.shape[0] if rows is None else rows
    return gemv_plan(M, width // 2 if glu else width, N, scale.shape[1] * block_size, bits, block_size,
                     config_key(config), rotate, bias is not None, N * words.stride(0) >= 2**31, x.device,
                     pdl(x.device), (x.stride(0), words.stride(0), scale.stride(0)), False, ends, glu, norm)


def can_rotate(bits: int, block_size: int, config: dict) -> bool:
    """Whether a slice of ``config`` holds whole blocks, so the kernel can rotate the activations itself."""
    return slice_codes(bits, config["VEC"]) % block_size == 0


def slice_codes(bits: int, vec: int) -> int:
    """Positions of K per slice: 32 lanes x ``vec`` plane-0 words x codes per word."""
    return 32 * vec * (32 // planes(bits)["W0"])


def gemv_ref(xr, qdata, scale, bias, bits, block_size, codebook=None) -> torch.Tensor:
    """Plain-torch equivalent of :func:`gemv`, in float64 (the test oracle)."""
    from ..format import dequantize_rotated_ref

    wr = dequantize_rotated_ref(qdata, scale, bits, block_size, codebook, dtype=torch.float64)
    y = xr.double() @ wr.t()
    if bias is not None:
        y = y + bias.double()
    return y
