"""Fused LUT GEMV for small M: ``y = xr @ Wr.T + bias`` straight from the packed codes.

Work split: a program owns ``BN`` output rows, one activation row and one of
``split_k`` slices of K; a step covers ``G`` groups of 32 codes per row.

Layout. Every tensor of the loop is ``[BN, C]``: a row and one *word of plane
0* per element (``C = G * W0`` columns, ``32 / W0`` codes per element). The
plane-0 words are the loop's only ``tl.load`` (contiguous, so Triton vectorizes
it and a thread holds a group's words for several rows); every other load --
plane-1/2 words, codebook lookups, activations, scales -- is an elementwise
inline-PTX ``ld.global.nc``, which has no layout of its own, so nothing moves
between threads whatever layout heuristics the Triton version applies. Those
gathers use clamped, always-valid addresses; columns past K are zeroed before
they are accumulated. (The interpreter, which cannot run PTX, takes
``tl.load`` on the same addresses.)

Per element: the next step's words are loaded before this step is computed
(so memory latency overlaps the arithmetic); the codes are unrolled (constant
shifts). For bits <= 5 the codebook lives in registers, entry ``i`` in lane
``i``, and a code is looked up with one warp shuffle (no address, no memory
traffic); for 6..8 bits it is read from memory (one L1 line per 32 entries). A
table of code *pairs* costs fewer instructions but spreads a warp's lookups
over 64 L1 lines and measured slower. The activations come four at a time and
serve all of a thread's rows.
Addresses are formed as ``mul.wide.u32`` + ``add.u64``, which ptxas turns into
one ``IMAD.WIDE.U32`` on the FMA pipe, leaving the integer pipe to unpacking. With ``split_k > 1`` partial sums go to a float32 workspace that
:func:`_splitk_reduce_kernel` sums, adds the bias to, and casts.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import kernel_codebook, planes

__all__ = ["decode_tile", "gemv", "gemv_ref"]

# Gathers: ``*(base + offset * size)`` with an int64 byte address ``base`` (scalar
# or tensor) and an int32 element offset >= 0, for any shape. On the GPU an
# elementwise inline-PTX load (no layout of its own); in the interpreter a
# tl.load of the same address.


@triton.jit
def _gather32(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        return tl.load((base + offset.to(tl.int64) * 4).to(tl.pointer_type(tl.int32), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mul.wide.u32 a, $1, 4; add.u64 a, a, $2; ld.global.nc.b32 $0, [a]; }",
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
        "{ .reg .u64 a; mul.wide.u32 a, $1, 2; add.u64 a, a, $2; ld.global.nc.b16 $0, [a]; }",
        "=h,r,l",
        [offset, base],
        dtype=tl.int16,
        is_pure=True,
        pack=1,
    )


@triton.jit
def _gather_f32x4(base, offset, INTERPRET: tl.constexpr):
    """Four consecutive float32 at a 16-byte aligned ``base + 4 * offset``."""
    if INTERPRET:
        ptr = (base + offset.to(tl.int64) * 4).to(tl.pointer_type(tl.float32), bitcast=True)
        return tl.load(ptr), tl.load(ptr + 1), tl.load(ptr + 2), tl.load(ptr + 3)
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mul.wide.u32 a, $4, 4; add.u64 a, a, $5; ld.global.nc.v4.f32 {$0, $1, $2, $3}, [a]; }",
        "=f,=f,=f,=f,r,l",
        [offset, base],
        dtype=(tl.float32, tl.float32, tl.float32, tl.float32),
        is_pure=True,
        pack=1,
    )


@triton.jit
def _lane_codebook(like, c_base, BITS: tl.constexpr, INTERPRET: tl.constexpr):
    """Bits of ``c[lane % 2**BITS]`` in every element of a thread (shape of ``like``), for BITS <= 5."""
    if INTERPRET:
        return like  # unused: the interpreter looks codes up in memory
    lane = tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [like], dtype=tl.int32, is_pure=True, pack=1)
    return _gather32(c_base, lane % (1 << BITS), INTERPRET)


@triton.jit
def _centroid(
    words0,  # [BN, C] uint32: this element's plane-0 word
    words1,  # [BN, C] uint32: its codes' plane-1 bits, the first at bit 0 (or unused)
    words2,  # [BN, C] uint32: the same for plane 2 (or unused)
    a: tl.constexpr,  # code index inside the element
    c_base,  # int64 address of the float32 codebook
    c_lane,  # [BN, C] this lane's codebook entry (SHUFFLE only)
    W0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    SHUFFLE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Centroid of code ``a`` of each element: [BN, C] float32."""
    code = (words0 >> (a * W0)) & ((1 << W0) - 1)
    if W1 > 0:
        code |= ((words1 >> (a * W1)) & ((1 << W1) - 1)) << O1
    if W2 > 0:
        code |= ((words2 >> (a * W2)) & ((1 << W2) - 1)) << O2
    if SHUFFLE and not INTERPRET:
        # lane ``code`` holds c[code]: a warp shuffle instead of a memory lookup
        v = tl.inline_asm_elementwise(
            "shfl.sync.idx.b32 $0, $1, $2, 0x1f, 0xffffffff;",
            "=r,r,r",
            [c_lane, code.to(tl.int32, bitcast=True)],
            dtype=tl.int32,
            is_pure=True,
            pack=1,
        )
        return v.to(tl.float32, bitcast=True)
    return _gather32(c_base, code, INTERPRET).to(tl.float32, bitcast=True)


@triton.jit
def _load_step(
    q_rows,  # [BN, 1] pointers to the rows' words
    q_base,  # [BN, 1] the same, as int64 addresses
    s_base,  # [BN, 1] int64 addresses of the rows' scales
    step,
    n_groups,
    col,  # [1, C]
    B: tl.constexpr,
    W0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    WPB: tl.constexpr,
    G: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """The words and scales a step needs: plane 0 by tl.load (the layout anchor), the rest gathered."""
    GPB: tl.constexpr = B // 32  # groups per block
    e = col % W0
    group = step * G + col // W0
    valid = group < n_groups
    words0 = tl.load(q_rows + (group // GPB) * WPB + (group % GPB) * W0 + e, mask=valid, other=0)
    words0 = words0.to(tl.uint32, bitcast=True)
    group = tl.minimum(group, n_groups - 1)
    block_word = (group // GPB) * WPB
    gin = group % GPB
    # The 32 / W0 codes of an element lie in one word of every narrower plane:
    # shift that word so the element's first code sits at bit 0.
    words1 = words0
    words2 = words0
    if W1 > 0:
        w = _gather32(q_base, block_word + B * O1 // 32 + gin * W1 + (e * W1) // W0, INTERPRET)
        words1 = w.to(tl.uint32, bitcast=True) >> (((e * W1) % W0) * (32 // W0))
    if W2 > 0:
        w = _gather32(q_base, block_word + B * O2 // 32 + gin * W2 + (e * W2) // W0, INTERPRET)
        words2 = w.to(tl.uint32, bitcast=True) >> (((e * W2) % W0) * (32 // W0))
    scale = _gather16(s_base, group // GPB, INTERPRET).to(tl.float16, bitcast=True).to(tl.float32)
    return words0, words1, words2, tl.where(valid, scale, 0.0)


# Interleaving values that sit in separate [BN, C] tensors into K order, in
# registers: interleave(v_0..v_{n-1}) = join(interleave(even), interleave(odd)),
# so that, after a reshape to [BN, n * C], element n * c + a holds v_a[:, c].


@triton.jit
def _i2(v0, v1):
    return tl.join(v0, v1)


@triton.jit
def _i4(v0, v1, v2, v3):
    return tl.join(_i2(v0, v2), _i2(v1, v3))


@triton.jit
def _i8(v0, v1, v2, v3, v4, v5, v6, v7):
    return tl.join(_i4(v0, v2, v4, v6), _i4(v1, v3, v5, v7))


@triton.jit
def _i16(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15):
    return tl.join(_i8(v0, v2, v4, v6, v8, v10, v12, v14), _i8(v1, v3, v5, v7, v9, v11, v13, v15))


@triton.jit
def decode_tile(
    q_ptr,  # [N, K_PAD * BITS // 32] int32
    s_ptr,  # [N, K_PAD // B] float16
    c_ptr,  # [2**BITS] float32 codebook
    offs_n,  # [BN] rows
    step,  # the tile covers codes [step * 32 * G, (step + 1) * 32 * G)
    N,
    K_PAD,
    stride_qn,
    stride_sn,
    BITS: tl.constexpr,
    B: tl.constexpr,
    W0: tl.constexpr,
    W1: tl.constexpr,
    O1: tl.constexpr,
    W2: tl.constexpr,
    O2: tl.constexpr,
    G: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """The rotated weight ``s / sqrt(B) * c[code]`` of rows ``offs_n``, 32 * G codes: [BN, 32 * G] float32.

    The GEMV's decoding (plane-0 words as the layout anchor, the rest gathered,
    lookups by warp shuffle for bits <= 5), the codes of each word interleaved
    back into K order; columns past K are zero.
    """
    C: tl.constexpr = G * W0
    WPB: tl.constexpr = B * BITS // 32
    SHUFFLE: tl.constexpr = BITS <= 5
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    q_rows = (q_ptr + rows * stride_qn)[:, None]
    q_base = q_rows.to(tl.int64, bitcast=True)
    s_base = (s_ptr + rows * stride_sn)[:, None].to(tl.int64, bitcast=True)
    c_base = c_ptr.to(tl.int64, bitcast=True)
    col = tl.arange(0, C)[None, :]
    c_lane = _lane_codebook(col % W0, c_base, BITS, INTERPRET) if SHUFFLE else col
    w0, w1, w2, scale = _load_step(q_rows, q_base, s_base, step, K_PAD // 32, col, B, W0, W1, O1, W2, O2, WPB, G, INTERPRET)
    s = scale * (1.0 / tl.sqrt(float(B)))
    if W0 == 8:
        t = _i4(
            s * _centroid(w0, w1, w2, 0, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 1, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 2, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 3, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
        )
    elif W0 == 4:
        t = _i8(
            s * _centroid(w0, w1, w2, 0, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 1, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 2, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 3, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 4, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 5, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 6, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 7, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
        )
    else:
        t = _i16(
            s * _centroid(w0, w1, w2, 0, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 1, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 2, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 3, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 4, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 5, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 6, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 7, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 8, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 9, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 10, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 11, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 12, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 13, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 14, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
            s * _centroid(w0, w1, w2, 15, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET),
        )
    return tl.reshape(t, (offs_n.shape[0], 32 * G))


@triton.jit
def _gemv_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32 view of the packed codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    c_ptr,  # [2**BITS] float32 codebook
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
    HAS_BIAS: tl.constexpr,
    WORKSPACE: tl.constexpr,
    INTERPRET: tl.constexpr,
    BN: tl.constexpr,
    G: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    PER_WORD: tl.constexpr = 32 // W0  # codes in a word of plane 0
    C: tl.constexpr = G * W0  # columns: the plane-0 words of G groups
    WPB: tl.constexpr = B * BITS // 32  # int32 words per block

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
    c_base = c_ptr.to(tl.int64, bitcast=True)
    SHUFFLE: tl.constexpr = BITS <= 5  # a codebook of <= 32 entries fits one register per lane
    x_base = (x_ptr + m.to(tl.int64) * stride_xm).to(tl.int64, bitcast=True)
    col = tl.arange(0, C)[None, :]
    e = col % W0
    acc = tl.zeros([BN, C], dtype=tl.float32)
    c_lane = _lane_codebook(e, c_base, BITS, INTERPRET) if SHUFFLE else e
    nxt = _load_step(q_rows, q_base, s_base, step_lo, n_groups, col, B, W0, W1, O1, W2, O2, WPB, G, INTERPRET)
    for step in range(step_lo, step_hi):
        words0, words1, words2, scale = nxt
        nxt = _load_step(
            q_rows, q_base, s_base, tl.minimum(step + 1, step_hi - 1), n_groups, col, B, W0, W1, O1, W2, O2, WPB, G,
            INTERPRET,
        )
        # the element's activations, 4 at a time: x[group * 32 + e * PER_WORD + 4 * j ...]
        x_first = tl.minimum(step * G + col // W0, n_groups - 1) * 32 + e * PER_WORD
        part = tl.zeros([BN, C], dtype=tl.float32)
        for j in tl.static_range(PER_WORD // 4):
            x0, x1, x2, x3 = _gather_f32x4(x_base, x_first + 4 * j, INTERPRET)
            part += x0 * _centroid(words0, words1, words2, 4 * j, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET)
            part += x1 * _centroid(words0, words1, words2, 4 * j + 1, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET)
            part += x2 * _centroid(words0, words1, words2, 4 * j + 2, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET)
            part += x3 * _centroid(words0, words1, words2, 4 * j + 3, c_base, c_lane, W0, W1, O1, W2, O2, SHUFFLE, INTERPRET)
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
        config: ``BN``, ``G``, ``SPLIT_K``, ``num_warps``, ``num_stages`` and
            optionally ``maxnreg`` (see :mod:`hlwq_ops.kernels.tuning`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    N = qdata.shape[0]
    table = kernel_codebook(bits, codebook, qdata.device)
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
        HAS_BIAS=bias is not None,
        WORKSPACE=split_k > 1,
        INTERPRET=xr.device.type == "cpu",
        BN=config["BN"],
        G=config["G"],
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
        **({"maxnreg": config["maxnreg"]} if config.get("maxnreg") else {}),
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
