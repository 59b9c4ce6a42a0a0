"""Tensor-core kernel for large M: ``y = xr @ Wr.T + bias`` with the weight decoded per tile, never stored whole.

The fused replacement for dequantize + cuBLAS. A program owns a ``[BM, BN]``
output tile (activation rows x weight rows) and one of ``SPLIT_K`` slices of
K. Per step it loads ``BK / (32 / W0)`` plane-0 words of each of its ``BN``
weight rows, decodes them as the GEMV does (:func:`.decode.decode_words`: one
warp shuffle per code for bits <= 5, codes joined back into K order in
registers), rounds the ``[BN, BK]`` tile to the activations' 16-bit dtype --
the weight the dequantize path would write -- and multiplies it with a
``[BM, BK]`` activation tile in one ``tl.dot``. The decoded tile is the dot's
B operand, which Triton stages through shared memory; the activation tiles
come through its software pipeline.

Dequantize + cuBLAS writes the 16-bit weight to memory and reads it back;
this kernel reads the packed weight once per ``BM`` activation rows and
decodes it that many times. It wins while the decode, amortized over ``BM``
rows, costs less than that round trip.

With ``SPLIT_K > 1`` the last program of a tile to finish sums the slices'
partials (an atomic arrival counter, reset by that program), as the GEMV does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import arrival_counters, kernel_codebook, planes, sum_if_last
from .decode import decode_words, lane_codebook, load_rows, row_geometry

__all__ = ["gemm", "supports"]


def supports(dtype: torch.dtype) -> bool:
    """Whether :func:`gemm` serves activations of ``dtype`` (16-bit floats: the dot's operands)."""
    return dtype in (torch.bfloat16, torch.float16)


@triton.jit
def _rounded_interpreted(w, dtype: tl.constexpr):
    """Float32 ``w`` rounded to the 16-bit ``dtype`` (to nearest even, as the GPU's cast), kept in float32.

    For the interpreter, whose own cast to bfloat16 rounds toward zero.
    """
    if dtype == tl.bfloat16:
        bits = w.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    return w.to(dtype).to(tl.float32)


@triton.jit
def _gemm_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] 16-bit rotated activations
    q_ptr,  # [N, K_PAD * BITS // 32] int32
    s_ptr,  # [N, K_PAD // B] float16
    c_ptr,  # [2**BITS] float32 codebook
    bias_ptr,  # [N] or unused
    out_ptr,  # [M, N]
    ws_ptr,  # [SPLIT_K, M, N] float32 partial sums (SPLIT)
    count_ptr,  # [>= tiles] int32 arrival counters, zero between calls (SPLIT)
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
    SPLIT: tl.constexpr,
    WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    C: tl.constexpr = BK * W0 // 32  # plane-0 words of a row per step
    SHUFFLE: tl.constexpr = BITS <= 5
    PAIRED: tl.constexpr = SHUFFLE and W0 == 4 and W1 == 1 and W2 == 0
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    split_k = tl.num_programs(2)
    m = pid_m * BM + tl.arange(0, BM)
    n = pid_n * BN + tl.arange(0, BN)
    rows = tl.minimum(n, N - 1)[:, None]  # clamped: every address is valid
    col = tl.arange(0, C)[None, :]
    q_base = q_ptr.to(tl.int64, bitcast=True)
    s_base = s_ptr.to(tl.int64, bitcast=True)
    c_base = c_ptr.to(tl.int64, bitcast=True)
    c_lane = lane_codebook(col, c_base, BITS, INTERPRET) if SHUFFLE else col
    x_rows = x_ptr + tl.minimum(m, M - 1).to(tl.int64)[:, None] * stride_xm  # clamped rows, masked stores
    kk = tl.arange(0, BK)[None, :]
    n_steps = tl.cdiv(K_PAD, BK)
    per_split = tl.cdiv(n_steps, split_k)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for step in range(pid_k * per_split, tl.minimum((pid_k + 1) * per_split, n_steps)):
        blk, word_off, p1_off, p2_off, sh1, sh2 = row_geometry(step * C + col, K_PAD, BITS, B, W0, W1, O1, W2, O2)
        s0, s1, s2, scale = load_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off,
                                      sh1, sh2, blk, W1, O1, W2, O2, PAIRED, WIDE, INTERPRET)
        scale = scale * (1.0 / tl.sqrt(float(B)))  # before the rounding to 16 bits, as dequantize does
        w = decode_words(s0, s1, s2, scale, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET)
        k = step * BK + kk
        x = tl.load(x_rows + k, mask=k < K_PAD, other=0.0)
        if INTERPRET:  # the same products in float32 (its dot misreads 16-bit tensors made by a cast)
            w = _rounded_interpreted(w, x.dtype)
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    out_mask = (m[:, None] < M) & (n[None, :] < N)
    tile = m.to(tl.int64)[:, None] * N + n[None, :]
    last = True
    if SPLIT:  # the last split of this tile to finish sums the partials
        counter = count_ptr + pid_n * tl.num_programs(1) + pid_m
        last, acc = sum_if_last(acc, ws_ptr, counter, tile, out_mask, tl.cast(M, tl.int64) * N, pid_k, split_k)
    if last:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + n, mask=n < N, other=0.0).to(tl.float32)[None, :]
        out_tile = out_ptr + m.to(tl.int64)[:, None] * stride_om + n[None, :]
        tl.store(out_tile, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def gemm(
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
    """Launch the kernel. Shapes are checked by the caller.

    Args:
        xr: (M, K_pad) bfloat16/float16 rotated activations, unit stride along K.
        config: ``BM``, ``BN``, ``BK`` (positions per step, a multiple of 128), ``SPLIT_K``
            (slices of K, summed by the last program of each tile), ``num_warps``, ``num_stages``.

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    N = qdata.shape[0]
    words = qdata.view(torch.int32)
    out = torch.empty((M, N), device=xr.device, dtype=out_dtype)
    grid = (triton.cdiv(N, config["BN"]), triton.cdiv(M, config["BM"]), config.get("SPLIT_K", 1))
    if grid[2] > 1:
        ws = torch.empty((grid[2], M, N), device=xr.device, dtype=torch.float32)
        counters = arrival_counters(xr.device, grid[0] * grid[1])
    else:
        ws = counters = out  # unused
    _gemm_kernel[grid](
        xr,
        words,
        scale,
        kernel_codebook(bits, codebook, qdata.device),
        bias if bias is not None else out,
        out,
        ws,
        counters,
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
        SPLIT=grid[2] > 1,
        WIDE=words.numel() >= 2**31,
        INTERPRET=xr.device.type == "cpu",
        BM=config["BM"],
        BN=config["BN"],
        BK=config["BK"],
        num_warps=config["num_warps"],
        num_stages=config["num_stages"],
    )
    return out
