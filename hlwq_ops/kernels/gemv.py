"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Activation-stationary. A program owns one activation row, one slice of ``BK``
positions of K and a range of ``ROWS`` weight rows. It loads its slice of the
rotated activations into registers once, then streams its rows ``R`` at a time:
per row the words of the slice (plane 0 by one vectorized ``tl.load``, the
narrower planes and the block scales by gathers, see :mod:`.decode`), decoded
and multiplied against the registers, summed along K within the warp. Nothing
but the weight and its scales is read in the loop, a thread holds few values
(~64 registers, so 4x the warps per SM of a K-looping design), and the next
rows' words are loaded before the current ones are decoded.

Tile ``[R, C]``: a row and one plane-0 word per element (``32 / W0`` codes);
``C = 32 * VEC`` words per row, so a warp spans one row of the slice and a
thread holds ``VEC`` consecutive words (one 16-byte load for VEC = 4). The
slices' partial sums go to a float32 workspace ``[n_slices, M, N]`` that
:func:`_splitk_reduce_kernel` sums, adds the bias to and casts; with a single
slice the kernel writes the output itself.

Decoding per code (bits <= 5, codebook entry ``i`` in lane ``i``): one shift
and one warp shuffle, then an FMA. At Q5 the plane-1 bits are first spread into
the plane-0 nibbles -- even codes into ``E``, odd codes into ``O``, bit 4 of each
byte, with one multiply each (bit ``2j`` to bit ``8j + 4`` is a shift by ``6j + 4``;
the four shifts never carry into one another's targets) -- so that code ``2j``
is ``E >> 8j`` and code ``2j + 1`` is ``O >> 8j`` (a shuffle ignores bits 5 and
up). For 6..8 bits the code is exact and looked up in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import kernel_codebook, planes
from .decode import gather16, gather32, lane_codebook, lookup

__all__ = ["gemv", "gemv_ref", "slice_codes"]


@triton.jit
def _sources(w0, w1, w2, W0: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr, W2: tl.constexpr,
             O2: tl.constexpr, PAIRED: tl.constexpr):
    """Per-element words the codes are cut from: (E, O, -) at Q5 (PAIRED), else the planes shifted to their offsets."""
    if PAIRED:
        even = (w0 & 0x0F0F0F0F) | (((w1 & 0x55) * 0x410410) & 0x10101010)
        odd = ((w0 >> 4) & 0x0F0F0F0F) | (((w1 & 0xAA) * 0x208208) & 0x10101010)
        return even, odd, w0
    return w0, w1 << O1, w2 << O2


@triton.jit
def _code(s0, s1, s2, a: tl.constexpr, BITS: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr,
          W2: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr, EXACT: tl.constexpr):
    """Code ``a`` of each element in its low bits; unless EXACT, bits from BITS up are garbage (see :func:`lookup`)."""
    if PAIRED:
        t = s0 if a % 2 == 0 else s1
        t = t >> (8 * (a // 2)) if a >= 2 else t
    else:
        t = s0 >> (a * W0) if a > 0 else s0
        if W1 > 0:  # bits below O1 from t, the rest from the shifted plane
            u = s1 >> (a * W1) if a > 0 else s1
            t = (t & ((1 << O1) - 1)) | (u & (0xFFFFFFFF - ((1 << O1) - 1)))
        if W2 > 0:
            u = s2 >> (a * W2) if a > 0 else s2
            t = (t & ((1 << O2) - 1)) | (u & (0xFFFFFFFF - ((1 << O2) - 1)))
    if EXACT:
        t = t & ((1 << BITS) - 1)
    return t


@triton.jit
def _quad(s0, s1, s2, a: tl.constexpr, x0, x1, x2, x3, p, c_base, c_lane, BITS: tl.constexpr, W0: tl.constexpr,
          W1: tl.constexpr, O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr,
          SHUFFLE: tl.constexpr, INTERPRET: tl.constexpr):
    """``p + sum_j x_j * c[code a + j]`` for four codes of each element."""
    EXACT: tl.constexpr = not SHUFFLE or INTERPRET
    p += x0 * lookup(_code(s0, s1, s2, a, BITS, W0, W1, O1, W2, O2, PAIRED, EXACT), c_base, c_lane, SHUFFLE, INTERPRET)
    p += x1 * lookup(_code(s0, s1, s2, a + 1, BITS, W0, W1, O1, W2, O2, PAIRED, EXACT), c_base, c_lane, SHUFFLE, INTERPRET)
    p += x2 * lookup(_code(s0, s1, s2, a + 2, BITS, W0, W1, O1, W2, O2, PAIRED, EXACT), c_base, c_lane, SHUFFLE, INTERPRET)
    p += x3 * lookup(_code(s0, s1, s2, a + 3, BITS, W0, W1, O1, W2, O2, PAIRED, EXACT), c_base, c_lane, SHUFFLE, INTERPRET)
    return p


@triton.jit
def _x4(x_first, a: tl.constexpr, valid):
    """Activations ``a .. a + 3`` of each element's codes: 4 x [1, C] float32."""
    return (
        tl.load(x_first + a, mask=valid, other=0.0),
        tl.load(x_first + a + 1, mask=valid, other=0.0),
        tl.load(x_first + a + 2, mask=valid, other=0.0),
        tl.load(x_first + a + 3, mask=valid, other=0.0),
    )


@triton.jit
def _load_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off, sh1, sh2, blk,
               W0: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr,
               PAIRED: tl.constexpr, INTERPRET: tl.constexpr):
    """Code sources (:func:`_sources`) and float32 scales of ``rows`` ([R, 1], valid): [R, C] each."""
    row_word = rows * stride_qn
    w0 = tl.load(q_ptr + row_word + word_off).to(tl.uint32, bitcast=True)
    w1 = w0
    w2 = w0
    if W1 > 0:
        w1 = gather32(q_base, row_word + p1_off, INTERPRET).to(tl.uint32, bitcast=True) >> sh1
    if W2 > 0:
        w2 = gather32(q_base, row_word + p2_off, INTERPRET).to(tl.uint32, bitcast=True) >> sh2
    s0, s1, s2 = _sources(w0, w1, w2, W0, W1, O1, W2, O2, PAIRED)
    scale = gather16(s_base, rows * stride_sn + blk, INTERPRET).to(tl.float16, bitcast=True).to(tl.float32)
    return s0, s1, s2, scale


@triton.jit
def _store(ptr, value, mask, INTERPRET: tl.constexpr):
    """``tl.store`` in the value's own layout (a 16- or 32-bit value per element, duplicates allowed).

    A ``tl.store`` of the row sums gets a layout of its own, and the conversion
    costs two CTA barriers per iteration; every lane holding a copy storing it
    costs one instruction per warp.
    """
    if INTERPRET:
        tl.store(ptr, value, mask=mask)
    else:
        addr = ptr.to(tl.int64, bitcast=True)
        if value.dtype.primitive_bitwidth == 16:
            bits = value.to(tl.int16, bitcast=True)
            asm: tl.constexpr = "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b16 [$1], $2; mov.u32 $0, 0; }"
            constraints: tl.constexpr = "=r,l,h,r"
        else:
            bits = value.to(tl.int32, bitcast=True)
            asm: tl.constexpr = "{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.global.b32 [$1], $2; mov.u32 $0, 0; }"
            constraints: tl.constexpr = "=r,l,r,r"
        tl.inline_asm_elementwise(asm, constraints, [addr, bits, mask.to(tl.int32)], dtype=tl.int32, is_pure=False,
                                  pack=1)


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    c_ptr,  # [2**BITS] float32 codebook
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N] output, or [n_slices, M, N] float32 workspace
    # dimensions
    M,
    N,
    K_PAD,
    # strides, in elements
    stride_xm,
    stride_qn,
    stride_sn,
    rows_per_program,
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
    INTERPRET: tl.constexpr,
    R: tl.constexpr,
    VEC: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    C: tl.constexpr = 32 * VEC  # plane-0 words of a row in the slice
    PER_WORD: tl.constexpr = 32 // W0  # codes per element
    PW0: tl.constexpr = B * W0 // 32  # plane-0 words per block
    WPB: tl.constexpr = B * BITS // 32  # words per block
    SHUFFLE: tl.constexpr = BITS <= 5
    PAIRED: tl.constexpr = SHUFFLE and W0 == 4 and W1 == 1 and W2 == 0

    # Geometry of the slice, [1, C]: block, word offsets, plane-1/2 words and shifts.
    col = tl.arange(0, C)[None, :]
    word = pid_k * C + col  # plane-0 word index along the row (blocks contiguous)
    blk = tl.minimum(word // PW0, K_PAD // B - 1)  # clamped: x is zero past K
    first = (word % PW0) * PER_WORD  # the element's first code in its block
    word_off = blk * WPB + word % PW0
    p1_off = blk * WPB + B * O1 // 32 + first * W1 // 32
    p2_off = blk * WPB + B * O2 // 32 + first * W2 // 32
    sh1 = ((first * W1) % 32).to(tl.uint32)
    sh2 = ((first * W2) % 32).to(tl.uint32)

    # The slice of activations, in registers for the whole program.
    k = word * PER_WORD
    valid = k < K_PAD
    x_first = x_ptr + m.to(tl.int64) * stride_xm + k
    xa0, xa1, xa2, xa3 = _x4(x_first, 0, valid)
    if PER_WORD >= 8:
        xb0, xb1, xb2, xb3 = _x4(x_first, 4, valid)
    if PER_WORD >= 16:
        xc0, xc1, xc2, xc3 = _x4(x_first, 8, valid)
        xd0, xd1, xd2, xd3 = _x4(x_first, 12, valid)

    q_base = q_ptr.to(tl.int64, bitcast=True)
    s_base = s_ptr.to(tl.int64, bitcast=True)
    c_base = c_ptr.to(tl.int64, bitcast=True)
    c_lane = lane_codebook(col, c_base, BITS, INTERPRET) if SHUFFLE else col
    r = tl.arange(0, R)[:, None]
    row_lo = pid_n * rows_per_program
    row_hi = tl.minimum(row_lo + rows_per_program, N)
    bias_base = bias_ptr.to(tl.int64, bitcast=True)
    if WORKSPACE:
        out_row = out_ptr + (pid_k * M + m).to(tl.int64) * N
    else:
        out_row = out_ptr + m.to(tl.int64) * N

    nxt = _load_rows(q_ptr, q_base, s_base, tl.minimum(row_lo + r, N - 1), stride_qn, stride_sn, word_off, p1_off,
                     p2_off, sh1, sh2, blk, W0, W1, O1, W2, O2, PAIRED, INTERPRET)
    for row0 in range(row_lo, row_hi, R):
        s0, s1, s2, scale = nxt
        nxt = _load_rows(q_ptr, q_base, s_base, tl.minimum(row0 + R + r, N - 1), stride_qn, stride_sn, word_off,
                         p1_off, p2_off, sh1, sh2, blk, W0, W1, O1, W2, O2, PAIRED, INTERPRET)
        p = tl.zeros([R, C], dtype=tl.float32)
        p = _quad(s0, s1, s2, 0, xa0, xa1, xa2, xa3, p, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE,
                  INTERPRET)
        if PER_WORD >= 8:
            p = _quad(s0, s1, s2, 4, xb0, xb1, xb2, xb3, p, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED,
                      SHUFFLE, INTERPRET)
        if PER_WORD >= 16:
            p = _quad(s0, s1, s2, 8, xc0, xc1, xc2, xc3, p, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED,
                      SHUFFLE, INTERPRET)
            p = _quad(s0, s1, s2, 12, xd0, xd1, xd2, xd3, p, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED,
                      SHUFFLE, INTERPRET)
        y = tl.sum(p * scale, axis=1)[:, None] * (1.0 / tl.sqrt(float(B)))  # [R, 1]
        rows = row0 + r
        if not WORKSPACE and HAS_BIAS:
            b_type: tl.constexpr = bias_ptr.dtype.element_ty
            if b_type.primitive_bitwidth == 16:
                b = gather16(bias_base, tl.minimum(rows, N - 1), INTERPRET).to(b_type, bitcast=True)
            else:
                b = gather32(bias_base, tl.minimum(rows, N - 1), INTERPRET).to(b_type, bitcast=True)
            y += b.to(tl.float32)
        _store(out_row + rows, y.to(out_ptr.dtype.element_ty), rows < row_hi, INTERPRET)


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
        config: ``VEC`` (plane-0 words per thread and row), ``R`` (rows per
            iteration), ``ROWS`` (rows per program), ``num_warps`` (see
            :mod:`hlwq_ops.kernels.tuning`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    N = qdata.shape[0]
    words = qdata.view(torch.int32)
    out = torch.empty((M, N), device=xr.device, dtype=out_dtype)
    n_slices = triton.cdiv(k_pad, slice_codes(bits, config["VEC"]))
    target = out if n_slices == 1 else torch.empty((n_slices, M, N), device=xr.device, dtype=torch.float32)
    _gemv_kernel[(triton.cdiv(N, config["ROWS"]), n_slices, M)](
        xr,
        words,
        scale,
        kernel_codebook(bits, codebook, qdata.device),
        bias if bias is not None else out,
        target,
        M,
        N,
        k_pad,
        xr.stride(0),
        words.stride(0),
        scale.stride(0),
        config["ROWS"],
        **planes(bits),
        BITS=bits,
        B=block_size,
        HAS_BIAS=bias is not None,
        WORKSPACE=n_slices > 1,
        INTERPRET=xr.device.type == "cpu",
        R=config["R"],
        VEC=config["VEC"],
        num_warps=config["num_warps"],
        num_stages=1,
    )
    if n_slices > 1:
        block = 1024
        _splitk_reduce_kernel[(triton.cdiv(M * N, block),)](
            target,
            bias if bias is not None else out,
            out,
            M * N,
            N,
            SPLIT_K=n_slices,
            HAS_BIAS=bias is not None,
            BLOCK=block,
        )
    return out


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
