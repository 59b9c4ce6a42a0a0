"""Tensor-core kernel for 3 <= M <= 64: the decoded weight is the MMA's A operand (Q4/Q5, standard codebook).

``y.T = Wr @ xr.T``: the weight tile is the *A* operand, which Hopper's
``wgmma`` may read from registers, and the activations the B operand, read
from shared memory. A program owns ``BN`` = 64 weight rows per warpgroup (one
or two warpgroups), ``BM`` activation rows and one of ``SPLIT_K`` slices of K.
Per step it loads ``C = 16`` plane-0 words of each row (128 codes, within one
block) and their plane-1 bytes (Q5) and decodes code ``a`` of every word
(``a = 0..7``) into a ``[BN, 16]`` bfloat16/float16 tile, to be multiplied
with activations ``8 * word + a``, which the caller stores contiguously
(:func:`permute_activations`, or the FWHT kernel's ``per_word=8``: K reordered,
nothing interleaved).

Two ways to multiply a step (``ONE_DOT``, a tuning choice):

- one dot (the default): each tile times the block's norm, the eight joined
  along K into one ``[BN, 128]`` operand (``k = 16 a + word``: the joins only
  rename registers). A dot that accumulates straight into the loop-carried
  accumulator is what Triton issues asynchronously (``wgmma`` in flight while
  the next step decodes). Folding the norm costs one more rounding per weight:
  relative error to a float64 reference 3.8e-3 instead of 2.8e-3 on the H200
  sweep (bf16 ``F.linear`` 2.3e-3; the Q5 code's own error is 4.4%); with
  float16 activations, blocks whose weights are below about 1e-4 in size
  land among float16's subnormals and lose more;
- eight dots of K = 16 summed in float32 and scaled by the norm there
  (session 5's step): Triton waits for each MMA, but one tile is live at a
  time instead of eight, which won at BM = 64 (``benchmarks/NOTES.md``,
  session 6).

Per weight the decode is a shift, one warp shuffle that returns the centroid
already in 16 bits (each lane holds ``c[lane]``, read from :func:`lane_table`
by :func:`codebook_asm`, so the standard codebook only), half a register pack
and, with one dot, half a multiply. Unlike the GEMV, the weight is decoded
once for all ``BM`` activation rows.

Layouts. Every leaf of the decode is a ``tl.load`` or a constant (no index
arithmetic, no runtime codebook), which is what Triton's
``MMAV3HoistLayoutConversion`` needs to move the conversion into the dot's
register layout from the decoded tile up to the loaded words: the 3-stage
pipeline copies the words and plane-1 bytes into shared memory
(``cp.async``) and each thread reads its words there in the dot's layout,
so the decoded tile never leaves registers. That needs the loads' alignment
to be visible to Triton (see the offsets in the loop): when it was not, the
plane-1 bytes were loaded unpipelined and the tile went through shared
memory, 40% slower (``benchmarks/NOTES.md``, session 5).

Supported: :func:`supports` (bits 4 and 5, blocks of 128 positions or more, the
standard codebook, bfloat16/float16 activations); the general tensor-core kernel
(:mod:`.mma`) serves the rest.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..codebook import codebook as standard_codebook
from .common import (
    SplitPlan,
    as_words,
    launch_options,
    launch_split_plan,
    pdl,
    release_dependents,
    sum_if_last,
    unit_stride,
    wait_for_inputs,
)
from .decode import code_sources
from .launch import Launch, cdiv, config_key, config_of, plan_cache

__all__ = ["codebook_asm", "lane_table", "permute_activations", "plan_for", "prepare", "supports", "wgmma"]

_WORDS = 16  # plane-0 words per row and step: the dot's K for one code index
_PER_WORD = 8  # codes per plane-0 word at bits 4 and 5


def supports(bits: int, block_size: int, codebook: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Whether :func:`wgmma` serves this layer and activation dtype."""
    return (
        bits in (4, 5)
        and block_size * 4 // 32 % _WORDS == 0
        and codebook is None
        and dtype in (torch.bfloat16, torch.float16)
    )


_LANE_TABLES: dict[tuple[int, torch.dtype, str], torch.Tensor] = {}


def lane_table(bits: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(32,) int16 on ``device``: entry ``l`` holds the bits of ``c[l % 2**bits]`` in ``dtype`` (standard codebook).

    Cached and never freed: :func:`codebook_asm` bakes its address into the kernel.
    Made when a weight is made (:func:`prepare`, from :func:`hlwq_ops.kernels.note_weight`):
    the first call for each (bits, dtype, device) copies from the host, which CUDA-graph
    capture forbids.
    """
    key = (bits, dtype, str(device))
    table = _LANE_TABLES.get(key)
    if table is None:
        c = standard_codebook(bits, torch.device("cpu")).to(dtype).view(torch.int16)
        # setdefault: a thread that loses a race uses the winner's table, never frees one already baked in
        table = _LANE_TABLES.setdefault(key, c[torch.arange(32, device="cpu") % (1 << bits)].to(device))
    return table


def prepare(bits: int, block_size: int, device: torch.device) -> None:
    """Make the lane tables a layer of ``bits`` / ``block_size`` needs on ``device`` now, not on its first call."""
    for dtype in (torch.bfloat16, torch.float16):
        if supports(bits, block_size, None, dtype):
            lane_table(bits, dtype, device)


@functools.lru_cache(maxsize=None)
def codebook_asm(bits: int, dtype: torch.dtype, device: torch.device) -> str:
    """Inline PTX that sets a register to ``c[lane % 2**bits]`` in ``dtype``: one load from :func:`lane_table`.

    The table's address is a constant in the PTX. A kernel argument would do as
    well for the load, but a value the decode reads that is neither loaded in the
    loop nor a constant stops Triton from keeping the decoded tile in registers
    (it then goes through shared memory; ``benchmarks/NOTES.md``, sessions 4 to 6).
    The former way -- 31 compares and selects on the lane id -- cost 62 of the
    loop's 481 instructions per step; this costs 4 (offline SASS, Q5). The price:
    the address is part of the kernel's source, so each process (and device)
    whose table lands at a new address compiles its own copy, and Triton's disk
    cache keeps them all.
    """
    address = lane_table(bits, dtype, device).data_ptr()
    return (
        "{ .reg .u32 l; .reg .u64 a; mov.u32 l, %laneid; mul.wide.u32 a, l, 2; "
        f"add.u64 a, a, {address}; ld.global.nc.u16 $0, [a]; }}"
    )


def permute_activations(xr: torch.Tensor, dtype: torch.dtype, span: int | None = None) -> torch.Tensor:
    """(M, K_pad) rotated activations reordered as the kernel reads them: ``out[m, a * K/8 + w] = xr[m, 8 * w + a]``.

    With ``span`` each run of ``span`` positions is reordered on its own
    (``out[m, s0 + a * span/8 + w] = xr[m, s0 + 8 * w + a]``): the block-local
    order of :mod:`.wsrs` (``span=128``)."""
    M, k_pad = xr.shape
    span = span or k_pad
    if k_pad % span or span % _PER_WORD:
        raise ValueError(f"permute_activations: span must divide K_pad ({k_pad}) and be a multiple of {_PER_WORD}, "
                         f"got {span}")
    runs = xr.reshape(M, k_pad // span, span // _PER_WORD, _PER_WORD).transpose(2, 3)
    return runs.to(dtype).contiguous().view(M, k_pad)


@triton.jit
def _lookup16(c_lane, code, dtype: tl.constexpr):
    """Centroid of ``code`` (bits 0..4 used) as ``dtype``: a warp shuffle of ``c_lane`` (GPU only)."""
    bits = tl.inline_asm_elementwise(
        "{ .reg .b32 t; shfl.sync.idx.b32 t, $1, $2, 0x1f, 0xffffffff; cvt.u16.u32 $0, t; }",
        "=h,r,r",
        [c_lane, code.to(tl.int32, bitcast=True)],
        dtype=tl.int16,
        is_pure=True,
        pack=1,
    )
    return bits.to(dtype, bitcast=True)


@triton.jit
def _round16(x, DTYPE: tl.constexpr):
    """float32 ``x`` rounded to the nearest DTYPE value (ties to even), as float32: the interpreter's stand-in for
    the GPU's conversion (its own bfloat16 conversion truncates and its bfloat16 arithmetic is wrong)."""
    if DTYPE == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE).to(tl.float32)


@triton.jit
def _centroids(even, odd, a: tl.constexpr, c_lane, c_ptr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Centroid of code ``a`` of every word: a [BN, C] tile in DTYPE (the interpreter: the same values in float32)."""
    src = even if a % 2 == 0 else odd
    code = src >> (8 * (a // 2)) if a >= 2 else src
    if INTERPRET:
        return _round16(tl.load(c_ptr + (code & 31)), DTYPE)
    return _lookup16(c_lane, code, DTYPE)


@triton.jit
def _tile(even, odd, a: tl.constexpr, c_lane, norm, c_ptr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """:func:`_centroids` times the rows' norms ([BN, 1], DTYPE), rounded to DTYPE."""
    w = _centroids(even, odd, a, c_lane, c_ptr, DTYPE, INTERPRET) * norm
    if INTERPRET:
        w = _round16(w, DTYPE)
    return w


@triton.jit
def _joined_tiles(even, odd, c_lane, norm, c_ptr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """The eight :func:`_tile` of a step joined along K: [BN, 128] with ``k = 16 a + word``."""
    w01 = tl.join(_tile(even, odd, 0, c_lane, norm, c_ptr, DTYPE, INTERPRET),
                  _tile(even, odd, 1, c_lane, norm, c_ptr, DTYPE, INTERPRET))
    w23 = tl.join(_tile(even, odd, 2, c_lane, norm, c_ptr, DTYPE, INTERPRET),
                  _tile(even, odd, 3, c_lane, norm, c_ptr, DTYPE, INTERPRET))
    w45 = tl.join(_tile(even, odd, 4, c_lane, norm, c_ptr, DTYPE, INTERPRET),
                  _tile(even, odd, 5, c_lane, norm, c_ptr, DTYPE, INTERPRET))
    w67 = tl.join(_tile(even, odd, 6, c_lane, norm, c_ptr, DTYPE, INTERPRET),
                  _tile(even, odd, 7, c_lane, norm, c_ptr, DTYPE, INTERPRET))
    w = tl.join(tl.join(w01, w23), tl.join(w45, w67))  # [BN, C, 2, 2, 2]: code a = a0 + 2 a1 + 4 a2
    BN: tl.constexpr = w.shape[0]
    return tl.permute(w, (0, 4, 3, 2, 1)).reshape(BN, 8 * w.shape[1])


@triton.jit
def _wgmma_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] rotated activations, 16-bit, permuted (permute_activations)
    q_ptr,  # [N, K_PAD * BITS // 32] int32 packed codes
    s_ptr,  # [N, K_PAD // B] float16 block scales
    c_ptr,  # [2**BITS] float32 codebook (read by the interpreter only)
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N]
    ws_ptr,  # [SPLIT_K, M, N] float32 partial sums (SPLIT)
    count_ptr,  # [>= tiles] int32 arrival counters, zero between calls (SPLIT)
    # dimensions
    M,
    N,
    K_PAD,
    # strides, in elements
    stride_qn,
    stride_sn,
    # meta-parameters
    BITS: tl.constexpr,
    B: tl.constexpr,
    CODEBOOK_ASM: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    INTERPRET: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    ONE_DOT: tl.constexpr,
    PDL: tl.constexpr,
):
    wait_for_inputs(PDL)  # programmatic dependent launch (hlwq_ops.kernels.common): launched early, reads later
    C: tl.constexpr = 16  # plane-0 words per row and step (_WORDS)
    PW0: tl.constexpr = B // 8  # plane-0 words per block
    WPB: tl.constexpr = B * BITS // 32  # words per block
    dtype: tl.constexpr = x_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    split_k = tl.num_programs(2)
    n = pid_n * BN + tl.arange(0, BN)
    m = pid_m * BM + tl.arange(0, BM)
    rows = tl.minimum(n, N - 1)  # clamped: every address is valid
    col = tl.arange(0, C)[None, :]
    k_step = tl.arange(0, 8 * C)[None, :]  # position in the step's activations: code a = k // C, word k % C
    # 64-bit tile bases and 32-bit offsets within the tile: 64-bit pointer tensors kept across
    # the loop cost registers, and registers (programs per SM) are what this kernel runs on.
    q_tile = q_ptr + (pid_n * BN).to(tl.int64) * stride_qn
    row_off = (rows - pid_n * BN)[:, None] * stride_qn
    x_tile = x_ptr + (pid_m * BM).to(tl.int64) * K_PAD
    x_off = (m - pid_m * BM)[:, None] * K_PAD
    x_mask = m[:, None] < M
    # Offsets are written so that Triton's alignment analysis sees their multiples of 16: written as
    # ``K_PAD // 8`` or ``(step * C) % PW0`` they lose it, the words arrive unvectorized, the plane-1
    # bytes are not pipelined, and the decoded tile goes through shared memory (measured 40% slower).
    KW = K_PAD // 128 * 16  # plane-0 words per row = positions per code index (K_PAD is a multiple of B >= 128)
    n_steps = KW // C
    per_split = tl.cdiv(n_steps, split_k)
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    for step in range(pid_k * per_split, tl.minimum((pid_k + 1) * per_split, n_steps)):
        blk = step // (PW0 // C)
        in_blk = (step % (PW0 // C)) * C  # the step's first plane-0 word within its block
        word = blk * WPB + in_blk + col  # [1, C] word offsets within the row
        w0 = tl.load(q_tile + (row_off + word)).to(tl.uint32, bitcast=True)
        # Every lane's codebook entry (codebook_asm; w0 is an ignored input that keeps it in the loop, where the
        # decode's leaves must be).
        c_lane = w0
        if not INTERPRET:
            c_lane = tl.inline_asm_elementwise(CODEBOOK_ASM, "=r,r", [w0], dtype=tl.int32, is_pure=True, pack=1)
        even = w0  # code 2j in bits 8j.., code 2j + 1 in bits 8j.. of ``odd`` (bit 4 from plane 1 at Q5)
        odd = w0 >> 4
        if BITS == 5:  # the word's 8 plane-1 bits: byte (word % 4) of plane-1 word (word / 4)
            p1_off = 4 * (row_off + blk * WPB + PW0) + in_blk + col
            p1 = tl.load(q_tile.to(tl.pointer_type(tl.uint8)) + p1_off).to(tl.uint32)
            even, odd, _ = code_sources(w0, p1, w0, 4, 0, True, INTERPRET)  # the GEMV's Q5 merge
        elif INTERPRET:
            even = even & 0x0F0F0F0F
            odd = odd & 0x0F0F0F0F
        norm = tl.load(s_ptr + rows * stride_sn + blk).to(tl.float32) * (1.0 / tl.sqrt(float(B)))
        if ONE_DOT:
            # The block's norm is folded into the 16-bit weights (one multiply per pair), so that the step is one
            # dot accumulating into the loop-carried acc: Triton then issues its MMAs asynchronously (a dot whose
            # result is scaled or added afterwards waits for each MMA). The eight [BN, 16] tiles of code a are
            # concatenated along K (k = 16 * a + word) by joins that stay in registers, matching the activations.
            norm = _round16(norm, dtype)[:, None] if INTERPRET else norm.to(dtype)[:, None]
            w = _joined_tiles(even, odd, c_lane, norm, c_ptr, dtype, INTERPRET)  # [BN, 128], k = 16 * a + word
            x = tl.load(x_tile + (x_off + (k_step // C) * KW + step * C + k_step % C), mask=x_mask, other=0.0)
            if INTERPRET:  # w is float32 there: the interpreter miscomputes 16-bit dots
                acc = tl.dot(w, tl.trans(x).to(tl.float32), acc)
            else:
                acc = tl.dot(w, tl.trans(x), acc)
        else:
            # Eight dots of K = 16 (one per code index), the norm applied to their sum in float32: each MMA is
            # waited for, but only one [BN, 16] tile is live at a time -- fewer registers, which wins at BM = 64.
            part = tl.zeros([BN, BM], dtype=tl.float32)
            for a in tl.static_range(8):
                w = _centroids(even, odd, a, c_lane, c_ptr, dtype, INTERPRET)
                x = tl.load(x_tile + (x_off + (a * KW + step * C) + col), mask=x_mask, other=0.0)  # [BM, C]
                if INTERPRET:  # as above
                    part = tl.dot(w, tl.trans(x).to(tl.float32), part)
                else:
                    part = tl.dot(w, tl.trans(x), part)
            acc += part * norm[:, None]
    release_dependents(PDL)  # the next kernel may launch once every program is past its loop (see the GEMV)
    out_mask = (m[None, :] < M) & (n[:, None] < N)
    tile = m.to(tl.int64)[None, :] * N + n[:, None]
    last = True
    if SPLIT:  # the last split of this tile to finish sums the partials
        counter = count_ptr + pid_n * tl.num_programs(1) + pid_m
        last, acc = sum_if_last(acc, ws_ptr, counter, tile, out_mask, tl.cast(M, tl.int64) * N, pid_k, split_k)
    if last:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[:, None]
        tl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def wgmma(
    xp: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    out_dtype: torch.dtype,
    config: dict,
    dependent: bool = False,
) -> torch.Tensor:
    """Launch the kernel. Shapes are checked by the caller; the layer must satisfy :func:`supports`.

    Args:
        xp: (M, K_pad) rotated activations in bfloat16 or float16, permuted
            (:func:`permute_activations`, or the FWHT kernel's ``per_word=8``).
        config: ``BM``, ``BN`` (tile), ``SPLIT_K`` (slices of K, summed by the
            last program of each tile), ``num_warps``, ``num_stages``, and
            optionally ``maxnreg`` (a register cap per thread: more programs per SM)
            and ``one_dot`` (default True: one K = 128 dot per step, the norm
            folded into the weights; False: eight K = 16 dots, the norm applied
            to their float32 sum).
        dependent: launch with programmatic dependent launch by default (waiting for the kernel before it in
            ``griddepcontrol.wait``); ``HLWQ_PDL`` overrides it and it is off but on sm_90 and newer
            (:func:`.common.pdl`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    words = as_words(qdata)
    scale, bias = unit_stride(scale), unit_stride(bias)  # indexed as packed rows / a packed vector
    plan = plan_for(xp.shape, xp.dtype, xp.device, words, scale, bias, bits, block_size, config, dependent)
    return launch_split_plan(plan, xp, words, scale, bias, standard_codebook(bits, xp.device), out_dtype)


def plan_for(x_shape: tuple[int, int], x_dtype: torch.dtype, device: torch.device, words: torch.Tensor,
             scale: torch.Tensor, bias: torch.Tensor | None, bits: int, block_size: int, config: dict,
             dependent: bool = False) -> SplitPlan:
    """The plan of a :func:`wgmma` call on activations of ``x_shape`` and ``x_dtype`` (``words``: the codes viewed as
    int32; ``scale`` and ``bias`` with unit stride; the rest as it takes them), which
    :func:`.common.launch_split_plan` runs. Made before the activations are (by ``kernels.linear``, resolving a
    call), it takes their shape and dtype."""
    M, k_pad = x_shape
    return _plan(M, words.shape[0], k_pad, bits, block_size, x_dtype, config_key(config), bias is not None, device,
                 pdl(device, default=dependent), (words.stride(0), scale.stride(0)))


@plan_cache
def _plan(M: int, N: int, k_pad: int, bits: int, block_size: int, dtype: torch.dtype, config: tuple,
          has_bias: bool, device: torch.device, dependent: bool, strides: tuple[int, int]) -> SplitPlan:
    """The launch of :func:`wgmma` for this call signature (``config``: :func:`.launch.config_key`)."""
    config = config_of(config)
    grid = (cdiv(N, config["BN"]), cdiv(M, config["BM"]), config["SPLIT_K"])
    interpret = device.type == "cpu"
    launch = Launch(
        _wgmma_kernel, grid, (M, N, k_pad, *strides),
        dict(BITS=bits, B=block_size, CODEBOOK_ASM="" if interpret else codebook_asm(bits, dtype, device),
             HAS_BIAS=has_bias, SPLIT=grid[2] > 1, INTERPRET=interpret, BM=config["BM"], BN=config["BN"],
             ONE_DOT=config.get("one_dot", True), PDL=dependent),
        dict(num_warps=config["num_warps"], num_stages=config["num_stages"], **launch_options(dependent),
             **({"maxnreg": config["maxnreg"]} if config.get("maxnreg") else {})),
    )
    return SplitPlan((M, N), (grid[2], M, N) if grid[2] > 1 else None, grid[0] * grid[1] if grid[2] > 1 else 0,
                     launch)
