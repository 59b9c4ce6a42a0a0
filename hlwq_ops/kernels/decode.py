"""Decoding packed codes in registers: the pieces the LUT kernels share.

The GEMV and the tensor-core kernel use ``row_geometry``, ``code_at`` and
``lookup``, and load words with ``fetch_rows`` / ``rows_sources`` (the GEMV,
which issues the loads an iteration ahead) or ``load_rows`` (both at once); the
dequantization kernel uses ``decode_tile``, the same decoding with the codes
joined back into K order (``decode_words``): a ``[BN, 32 * G]`` tile of
rotated weights.

Layout. Every tensor of a tile is ``[rows, C]``: a row and one *word of plane
0* per element (``32 / W0`` codes per element). The
plane-0 words are the only ``tl.load`` (contiguous, so Triton vectorizes it);
every other load -- plane-1/2 words, codebook lookups, scales -- is an
elementwise inline-PTX ``ld.global.nc``, which has no layout of its own, so
nothing moves between threads whatever layout heuristics the Triton version
applies (Triton 3.6 and 3.9 differ). Those gathers use clamped, always-valid
addresses; the interpreter, which cannot run PTX, takes ``tl.load`` on the
same addresses. Addresses are formed as ``mul.wide.u32`` + ``add.u64``, which
ptxas turns into one ``IMAD.WIDE.U32`` on the FMA pipe.

For bits <= 5 the codebook lives in registers, entry ``i`` in lane ``i``, and a
code is looked up with one warp shuffle (no address, no memory traffic); for 6..8
bits it is read from memory (one L1 line per 32 entries).

Per element (one plane-0 word, ``32 / W0`` codes) the GEMV and the tensor-core
kernel cut codes with :func:`code_at`: one shift per code for bits <= 5. At Q5
the plane-1 bits are first spread into the plane-0 nibbles -- even codes into
``E``, odd codes into ``O``, bit 4 of each byte, with one multiply each (bit
``2j`` to bit ``8j + 4`` is a shift by ``6j + 4``; the four shifts never carry
into one another's targets) -- so that code ``2j`` is ``E >> 8j`` and code
``2j + 1`` is ``O >> 8j`` (a shuffle ignores bits 5 and up).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = [
    "centroid_at",
    "code_at",
    "code_sources",
    "decode_tile",
    "decode_words",
    "fetch_rows",
    "gather16",
    "gather32",
    "lane_codebook",
    "load_rows",
    "lookup",
    "row_geometry",
    "rows_sources",
    "store_elementwise",
]

# Gathers: ``*(base + offset * size)`` with an int64 byte address ``base`` (scalar
# or tensor) and an int32 element offset >= 0, for any shape. On the GPU an
# elementwise inline-PTX load (no layout of its own); in the interpreter a
# tl.load of the same address.


@triton.jit
def gather32(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        offset = offset.to(tl.uint32, bitcast=True).to(tl.int64)  # unsigned, as in the PTX below
        return tl.load((base + offset * 4).to(tl.pointer_type(tl.int32), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mul.wide.u32 a, $1, 4; add.u64 a, a, $2; ld.global.nc.b32 $0, [a]; }",
        "=r,r,l",
        [offset, base],
        dtype=tl.int32,
        is_pure=True,
        pack=1,
    )


@triton.jit
def gather16(base, offset, INTERPRET: tl.constexpr):
    if INTERPRET:
        offset = offset.to(tl.uint32, bitcast=True).to(tl.int64)  # unsigned, as in the PTX below
        return tl.load((base + offset * 2).to(tl.pointer_type(tl.int16), bitcast=True))
    return tl.inline_asm_elementwise(
        "{ .reg .u64 a; mul.wide.u32 a, $1, 2; add.u64 a, a, $2; ld.global.nc.b16 $0, [a]; }",
        "=h,r,l",
        [offset, base],
        dtype=tl.int16,
        is_pure=True,
        pack=1,
    )


@triton.jit
def lane_codebook(like, c_base, BITS: tl.constexpr, INTERPRET: tl.constexpr):
    """Bits of ``c[lane % 2**BITS]`` in every element of a thread (shape of ``like``), for BITS <= 5."""
    if INTERPRET:
        return like  # unused: the interpreter looks codes up in memory
    lane = tl.inline_asm_elementwise("mov.u32 $0, %laneid;", "=r,r", [like], dtype=tl.int32, is_pure=True, pack=1)
    return gather32(c_base, lane % (1 << BITS), INTERPRET)


@triton.jit
def lookup(code, c_base, c_lane, SHUFFLE: tl.constexpr, INTERPRET: tl.constexpr):
    """Centroid ``c[code]`` as float32: a warp shuffle from lane ``code`` (SHUFFLE), else a gather.

    A shuffle reads only bits 0..4 of ``code``, so with SHUFFLE the bits at and
    above BITS may hold anything (lane ``i`` holds ``c[i % 2**BITS]``); the
    gather needs the exact code.
    """
    if SHUFFLE and not INTERPRET:
        v = tl.inline_asm_elementwise(
            "shfl.sync.idx.b32 $0, $1, $2, 0x1f, 0xffffffff;",
            "=r,r,r",
            [c_lane, code.to(tl.int32, bitcast=True)],
            dtype=tl.int32,
            is_pure=True,
            pack=1,
        )
        return v.to(tl.float32, bitcast=True)
    return gather32(c_base, code.to(tl.int32, bitcast=True), INTERPRET).to(tl.float32, bitcast=True)


@triton.jit
def _plane_word(word, PW0: tl.constexpr, W0: tl.constexpr, W: tl.constexpr):
    """Index within its block of the plane-``W`` word holding the bits of plane-0 word ``word``'s codes (0 if
    ``W`` is 0): ``(word % PW0) * (32 // W0) * W // 32``."""
    if W == 0:
        out = word * 0
    else:
        SHARE: tl.constexpr = 32 // (32 // W0 * W)  # plane-0 words per plane-W word: 2 or 4
        out = (word // SHARE) % (PW0 // SHARE)
    return out


@triton.jit
def row_geometry(word, K_PAD, BITS: tl.constexpr, B: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                 O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr):
    """Where plane-0 word ``word`` of a row (any shape, index along the row) and its codes' other bits are.

    Returns ``blk`` (the block, clamped to the last: activations past K must be
    zero), the word offsets of plane 0, 1 and 2 within the row, and the shifts
    that bring the element's first code to bit 0 of its plane-1/2 words.
    """
    PER_WORD: tl.constexpr = 32 // W0
    PW0: tl.constexpr = B * W0 // 32  # plane-0 words per block
    WPB: tl.constexpr = B * BITS // 32  # words per block
    blk = tl.minimum(word // PW0, K_PAD // B - 1)
    first = (word % PW0) * PER_WORD  # the element's first code in its block
    word_off = blk * WPB + word % PW0
    # The plane-1/2 word of the element's codes: as ``(word % PW0) * PER_WORD * W1 // 32`` LLVM did not see that a
    # thread's aligned plane-0 words share it, and the GEMV gathered it twice a row (offline SASS, Q5 VEC = 4, R = 8:
    # 8 -> 6 loads and 313 -> 307 instructions an iteration; benchmarks/NOTES.md, session 49).
    p1_off = blk * WPB + B * O1 // 32 + _plane_word(word, PW0, W0, W1)
    p2_off = blk * WPB + B * O2 // 32 + _plane_word(word, PW0, W0, W2)
    sh1 = ((first * W1) % 32).to(tl.uint32)
    sh2 = ((first * W2) % 32).to(tl.uint32)
    return blk, word_off, p1_off, p2_off, sh1, sh2


@triton.jit
def _nibbles_over(low, high, INTERPRET: tl.constexpr):
    """Bits 0..3 of every byte from ``low``, bits 4..7 from ``high``: one LOP3 (LLVM would split it in two)."""
    if INTERPRET:
        return high ^ ((low ^ high) & 0x0F0F0F0F)
    return tl.inline_asm_elementwise(
        "lop3.b32 $0, $1, $2, 0x0F0F0F0F, 0xE4;",  # (a & c) | (b & ~c)
        "=r,r,r",
        [low, high],
        dtype=tl.uint32,
        is_pure=True,
        pack=1,
    )


@triton.jit
def code_sources(w0, w1, w2, O1: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr, INTERPRET: tl.constexpr):
    """Per-element words the codes are cut from: (E, O, -) at Q5 (PAIRED), else the planes shifted to their offsets.

    At Q5 each byte of E (O) takes its low nibble from plane 0 and its bit 4 from
    the plane-1 bits, spread by one multiply; bits 5..7 are left as garbage,
    which a shuffle ignores and :func:`code_at` masks when EXACT.
    """
    if PAIRED:
        even = _nibbles_over(w0, (w1 & 0x55) * 0x410410, INTERPRET)  # bit 2j to bit 8j + 4
        odd = _nibbles_over(w0 >> 4, (w1 & 0xAA) * 0x208208, INTERPRET)  # bit 2j + 1 to bit 8j + 4
        return even, odd, w0
    return w0, w1 << O1, w2 << O2


@triton.jit
def code_at(s0, s1, s2, a: tl.constexpr, BITS: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr, O1: tl.constexpr,
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
def centroid_at(s0, s1, s2, a: tl.constexpr, c_base, c_lane, BITS: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr, SHUFFLE: tl.constexpr,
                INTERPRET: tl.constexpr):
    """Centroid of code ``a`` of each element (:func:`code_at`, then :func:`lookup`): float32."""
    EXACT: tl.constexpr = not SHUFFLE or INTERPRET  # a gather needs the exact code
    return lookup(code_at(s0, s1, s2, a, BITS, W0, W1, O1, W2, O2, PAIRED, EXACT), c_base, c_lane, SHUFFLE, INTERPRET)


@triton.jit
def fetch_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off, blk, W1: tl.constexpr,
               W2: tl.constexpr, WIDE: tl.constexpr, INTERPRET: tl.constexpr):
    """The loads of ``rows`` ([R, 1], valid): plane-0/1/2 words and raw scale bits, [R, C] each.

    Only loads, so that a pipelined loop can issue them iterations before
    :func:`rows_sources` uses them. WIDE: the packed weight has 2**31 words or
    more, so the plane-0 address needs 64-bit arithmetic (the gathers read
    their int32 offsets as unsigned: up to 2**32 words).
    """
    row_word = rows * stride_qn
    if WIDE:
        w0 = tl.load(q_ptr + rows.to(tl.int64) * stride_qn + word_off)
    else:
        w0 = tl.load(q_ptr + row_word + word_off)
    w1 = w0
    w2 = w0
    if W1 > 0:
        w1 = gather32(q_base, row_word + p1_off, INTERPRET)
    if W2 > 0:
        w2 = gather32(q_base, row_word + p2_off, INTERPRET)
    return w0, w1, w2, gather16(s_base, rows * stride_sn + blk, INTERPRET)


@triton.jit
def rows_sources(fetched, sh1, sh2, O1: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr,
                 INTERPRET: tl.constexpr):
    """Code sources (:func:`code_sources`) and float32 scales from what :func:`fetch_rows` loaded."""
    w0, w1, w2, scale_bits = fetched
    w0 = w0.to(tl.uint32, bitcast=True)
    w1 = w1.to(tl.uint32, bitcast=True) >> sh1
    w2 = w2.to(tl.uint32, bitcast=True) >> sh2
    s0, s1, s2 = code_sources(w0, w1, w2, O1, O2, PAIRED, INTERPRET)
    return s0, s1, s2, scale_bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def load_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off, sh1, sh2, blk,
              W1: tl.constexpr, O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr,
              PAIRED: tl.constexpr, WIDE: tl.constexpr, INTERPRET: tl.constexpr):
    """Code sources and float32 scales of ``rows`` ([R, 1], valid): :func:`fetch_rows` then :func:`rows_sources`."""
    fetched = fetch_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off, blk, W1, W2,
                         WIDE, INTERPRET)
    return rows_sources(fetched, sh1, sh2, O1, O2, PAIRED, INTERPRET)


@triton.jit
def store_elementwise(ptr, value, mask, PLAIN: tl.constexpr):
    """``*ptr = value`` where ``mask``, in the value's own layout (a 16- or 32-bit value per element, duplicates
    allowed): an elementwise inline-PTX store, the counterpart of the gathers; with ``PLAIN`` a ``tl.store`` (the
    interpreter runs no PTX, and Inductor's mutation analysis of a kernel it launches reads no PTX store).

    A ``tl.store`` gets a layout of its own: for the GEMV's row sums the
    conversion costs two CTA barriers per iteration, and the tensor-core GEMV's
    one-element-per-thread tensors must not move at all.
    """
    if PLAIN:
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


# Interleaving values that sit in separate [R, C] tensors into K order, in
# registers: interleave(v_0..v_{n-1}) = join(interleave(even), interleave(odd)),
# so that, after a reshape to [R, n * C], element n * c + a holds v_a[:, c].


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
def decode_words(s0, s1, s2, scale, c_base, c_lane, BITS: tl.constexpr, W0: tl.constexpr, W1: tl.constexpr,
                 O1: tl.constexpr, W2: tl.constexpr, O2: tl.constexpr, PAIRED: tl.constexpr,
                 SHUFFLE: tl.constexpr, INTERPRET: tl.constexpr):
    """``scale * c[code]`` of every code of ``[R, C]`` elements (:func:`rows_sources`' outputs), in K order.

    Returns ``[R, C * 32 / W0]`` float32: element ``c`` holds the element's
    codes at columns ``c * 32 / W0 + a``, as the packed row does.
    """
    P: tl.constexpr = 32 // W0  # codes per element
    v = ()
    for a in tl.static_range(P):
        v = v + (scale * centroid_at(s0, s1, s2, a, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE,
                                     INTERPRET),)
    if P == 4:
        t = _i4(v[0], v[1], v[2], v[3])
    elif P == 8:
        t = _i8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
    else:
        t = _i16(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15])
    return tl.reshape(t, (s0.shape[0], s0.shape[1] * P))


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
    WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """The rotated weight ``s / sqrt(B) * c[code]`` of rows ``offs_n``, 32 * G codes: [BN, 32 * G] float32.

    The GEMV's decoding (:func:`load_rows`, :func:`decode_words`); columns past
    K_PAD repeat the last block's codes (the caller masks them).
    """
    C: tl.constexpr = G * W0  # plane-0 words per row
    SHUFFLE: tl.constexpr = BITS <= 5
    PAIRED: tl.constexpr = SHUFFLE and W0 == 4 and W1 == 1 and W2 == 0
    rows = tl.minimum(offs_n, N - 1)[:, None]
    col = tl.arange(0, C)[None, :]
    c_base = c_ptr.to(tl.int64, bitcast=True)
    c_lane = lane_codebook(col, c_base, BITS, INTERPRET) if SHUFFLE else col
    blk, word_off, p1_off, p2_off, sh1, sh2 = row_geometry(step * C + col, K_PAD, BITS, B, W0, W1, O1, W2, O2)
    s0, s1, s2, scale = load_rows(q_ptr, q_ptr.to(tl.int64, bitcast=True), s_ptr.to(tl.int64, bitcast=True), rows,
                                  stride_qn, stride_sn, word_off, p1_off, p2_off, sh1, sh2, blk, W1, O1, W2, O2,
                                  PAIRED, WIDE, INTERPRET)
    scale = scale * (1.0 / tl.sqrt(float(B)))  # per word: one multiply per weight, not two
    return decode_words(s0, s1, s2, scale, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET)
