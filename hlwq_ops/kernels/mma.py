"""Tensor-core kernel for mid M: ``y = xr @ Wr.T + bias`` with the weight tile decoded in registers.

A program owns a ``[BM, BN]`` output tile and one of ``SPLIT_K`` slices of K.
Per step it loads ``C = 32 * VEC`` plane-0 words of each of its ``BN`` rows
(``32 / W0`` codes each) and decodes them as the GEMV does (:mod:`.decode`):
code ``a`` of every word, times the block scales, is a ``[BN, C]`` tile, which
meets the activations at positions ``8 * word + a`` (for Q4/Q5) in one
``tl.dot`` -- K is reordered instead of interleaving the decoded codes (an
interleaved tile, one dot per step, measured 1.3-1.6x slower: the register
permutations cost more than the extra products' barriers). The
products run on the tensor cores in tf32 (10-bit mantissa, like the bfloat16
GEMM it replaces; the kernel is bound by decoding, not by the tensor cores) or
in tf32x3 (float32 accuracy) when the output is float32. The weight is read once
per M tile, unlike the GEMV, which reads it once per activation row. With
``SPLIT_K > 1`` the last program of a tile to finish sums the slices' partials
(an atomic arrival counter, reset by that program).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import SplitPlan, as_words, kernel_codebook, launch_split_plan, planes, sum_if_last, unit_stride
from .decode import centroid_at, lane_codebook, load_rows, row_geometry
from .launch import Launch, cdiv, config_key, config_of, plan_cache

__all__ = ["mma"]


@triton.jit
def _mma_kernel(
    # pointers
    x_ptr,  # [M, K_PAD] float32 rotated activations
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
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    VEC: tl.constexpr,
):
    C: tl.constexpr = 32 * VEC  # plane-0 words of a row per step
    PER_WORD: tl.constexpr = 32 // W0
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
    x_rows = x_ptr + m.to(tl.int64)[:, None] * stride_xm
    n_steps = tl.cdiv(K_PAD // PER_WORD, C)
    per_split = tl.cdiv(n_steps, split_k)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for step in range(pid_k * per_split, tl.minimum((pid_k + 1) * per_split, n_steps)):
        word = step * C + col
        blk, word_off, p1_off, p2_off, sh1, sh2 = row_geometry(word, K_PAD, BITS, B, W0, W1, O1, W2, O2)
        s0, s1, s2, scale = load_rows(q_ptr, q_base, s_base, rows, stride_qn, stride_sn, word_off, p1_off, p2_off,
                                      sh1, sh2, blk, W1, O1, W2, O2, PAIRED, WIDE, INTERPRET)
        k = word * PER_WORD
        x_mask = (m[:, None] < M) & (k < K_PAD)
        for a in tl.static_range(PER_WORD):  # one product per code position: no interleaving of decoded codes
            w = scale * centroid_at(s0, s1, s2, a, c_base, c_lane, BITS, W0, W1, O1, W2, O2, PAIRED, SHUFFLE, INTERPRET)
            x = tl.load(x_rows + k + a, mask=x_mask, other=0.0)
            acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION)
    acc = acc * (1.0 / tl.sqrt(float(B)))
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


def mma(
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
    """Launch the tensor-core kernel. Shapes are checked by the caller.

    Args:
        xr: (M, K_pad) float32 rotated activations, contiguous.
        config: ``BM``, ``BN``, ``VEC`` (32 * VEC plane-0 words per row and step), ``SPLIT_K``
            (slices of K, summed by the last program of each tile), ``num_warps``, ``num_stages``.

    Returns:
        (M, N) in ``out_dtype``.
    """
    M, k_pad = xr.shape
    words = as_words(qdata)
    scale, bias = unit_stride(scale), unit_stride(bias)  # indexed as packed rows / a packed vector
    plan = _plan(M, words.shape[0], k_pad, bits, block_size, out_dtype, config_key(config), bias is not None,
                 words.numel() >= 2**31, xr.device.type == "cpu", (xr.stride(0), words.stride(0), scale.stride(0)))
    return launch_split_plan(plan, xr, words, scale, bias, kernel_codebook(bits, codebook, qdata.device), out_dtype)


@plan_cache
def _plan(M: int, N: int, k_pad: int, bits: int, block_size: int, out_dtype: torch.dtype, config: tuple,
          has_bias: bool, wide: bool, interpret: bool, strides: tuple[int, int, int]) -> SplitPlan:
    """The launch of :func:`mma` for this call signature (``config``: :func:`.launch.config_key`)."""
    config = config_of(config)
    grid = (cdiv(N, config["BN"]), cdiv(M, config["BM"]), config.get("SPLIT_K", 1))
    launch = Launch(
        _mma_kernel, grid, (M, N, k_pad, *strides, N),  # (the output's row stride: it is contiguous)
        dict(**planes(bits), BITS=bits, B=block_size, HAS_BIAS=has_bias, SPLIT=grid[2] > 1, WIDE=wide,
             PRECISION="tf32x3" if out_dtype == torch.float32 else "tf32", INTERPRET=interpret, BM=config["BM"],
             BN=config["BN"], VEC=config["VEC"]),
        dict(num_warps=config["num_warps"], num_stages=config["num_stages"]),
    )
    return SplitPlan((M, N), (grid[2], M, N) if grid[2] > 1 else None, grid[0] * grid[1] if grid[2] > 1 else 0,
                     launch)
