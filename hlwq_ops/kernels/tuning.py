"""Launch configurations: the only place that picks them.

``path_for(M, wgmma, ws)`` chooses the kernel family by the number of activation rows;
``config_for`` picks a kernel's tile for a shape. On the first call for a key
``(kernel, N, K_pad, bits, M bucket)`` it times a handful of candidates
(seconds, dominated by compiling them) in a CUDA graph over weights that span
twice the L2, as a decode step reads them, unless ``HLWQ_AUTOTUNE=0``: other
live weights of the same shape (:func:`remember`; a model's other layers), and
copies only where there are too few of those; results persist in a JSON file per GPU model under
``$HLWQ_CACHE_DIR`` (default ``~/.cache/hlwq_ops``) so later processes skip it. The table is keyed by GPU model
too (:func:`key_for`): a process with two models of GPU tunes each for itself and saves each one's choices in its own
file; two cards of one model share them. The file's name carries a digest of the kernels' sources, so a changed
kernel re-tunes; a config in it whose parameters none of this version's candidates for its key has (a file edited or
damaged) is tuned again.
During CUDA-graph capture, or on the CPU (the Triton interpreter), an untuned
key gets the heuristic default instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import time
import weakref
from pathlib import Path
from typing import Callable

import torch

try:
    import fcntl
except ImportError:  # (Windows)
    fcntl = None

from .common import env_flag, planes, sm_count
from .gemv import slice_codes

logger = logging.getLogger(__name__)

__all__ = [
    "GEMV_MAX_M",
    "GEMV_MAX_M_WGMMA",
    "GEMV_MAX_M_SMALL",
    "GEMV_SMALL_WEIGHT",
    "MMA_MIN_M_WGMMA",
    "MMA_MAX_M",
    "MMA_MAX_M_WGMMA",
    "PATHS",
    "TC_MAX_M",
    "WS_MIN_M",
    "WSRS_MAX_M",
    "forced_path",
    "autotune",
    "device_tag",
    "key_for",
    "gemv_competes",
    "path_for",
    "m_bucket",
    "candidates",
    "config_for",
    "remember",
    "tuned",
    "tuned_choices",
]

# Largest M each kernel family serves (crossovers measured, benchmarks/RESULTS.md):
# the GEMV reads the weight once per activation row, the tensor-core kernels once
# per 16..64 rows; past MMA_MAX_M dequantize + cuBLAS wins (H100, session 3). Where the
# register-operand tensor-core kernel applies (kernels.wgmma.supports) it takes over
# from the GEMV at M = 3 and loses to dequantize + cuBLAS from M = 128 (H200, session 5).
# At M = 2 there the winner depends on the shape, the bits and the card (the loser's extra time, Q5: the tensor-core
# kernels' 5-26% on 4096 x 4096 and 1024 x 4096 on the H200, section 32b; the GEMV's 8-10% on 14336 x 4096 and
# 4096 x 14336 on the H100, where at Q4 the GEMV won on 4096 x 14336, section 47b): from MMA_MIN_M_WGMMA rows the
# tuner times the GEMV beside them, up to GEMV_MAX_M_WGMMA.
GEMV_MAX_M = 4
GEMV_MAX_M_WGMMA = 2
# On small layers the GEMV competes further, up to GEMV_MAX_M_SMALL rows: there the tensor-core kernels' fixed costs
# and their FWHT launch outweigh reading a weight of a few MB once per row pair (Qwen3.5-9B's 32 x 4096 in_proj_b and
# in_proj_a took 8.4 and 11.1 us a layer at batch 8 with their FWHTs, bf16 5.7 and 5.6; its k and v 0.75-0.79x bf16:
# H100, benchmarks/RESULTS.md 61c). Small: at most GEMV_SMALL_WEIGHT codes (N x K_pad).
GEMV_MAX_M_SMALL = 8
GEMV_SMALL_WEIGHT = 4096 * 4096
MMA_MIN_M_WGMMA = 2
MMA_MAX_M = 64
MMA_MAX_M_WGMMA = 64
PATHS = ("gemv", "mma", "dequant")


def path_for(M: int, wgmma: bool = False, ws: bool = False) -> str:
    """Kernel family for M activation rows ("mma": the tensor-core kernels); ``HLWQ_PATH`` forces one.

    Args:
        wgmma: the layer and activations suit :mod:`hlwq_ops.kernels.wgmma`.
        ws: the warp-specialized kernel (:mod:`hlwq_ops.kernels.wsmma`) runs this layer here; then every M past
            the GEMV's is "mma", where the tuner also times dequantize + cuBLAS past ``MMA_MAX_M_WGMMA`` rows
            (unless ``HLWQ_PATH=mma`` forces the tensor-core kernels).

    Where the tensor-core kernels serve the layer (``wgmma`` or ``ws``), "mma" starts at ``MMA_MIN_M_WGMMA`` rows,
    and up to ``GEMV_MAX_M_WGMMA`` rows (on small layers ``GEMV_MAX_M_SMALL``) the tuner times the GEMV there too
    (:func:`gemv_competes`).
    """
    forced = forced_path()
    if forced:
        return forced
    if not (wgmma or ws):
        return "gemv" if M <= GEMV_MAX_M else "mma" if M <= MMA_MAX_M else "dequant"
    if M < MMA_MIN_M_WGMMA:
        return "gemv"
    return "mma" if ws or M <= MMA_MAX_M_WGMMA else "dequant"


def gemv_competes(M: int, N: int, k_pad: int) -> bool:
    """Whether the tuner times the GEMV beside the tensor-core kernels at M rows of an (N, K_pad) layer (where
    :func:`path_for` gives "mma" for a layer they serve): from ``MMA_MIN_M_WGMMA`` up to ``GEMV_MAX_M_WGMMA`` rows,
    on a small layer up to ``GEMV_MAX_M_SMALL``; unless ``HLWQ_PATH`` forces a family."""
    small = N * k_pad <= GEMV_SMALL_WEIGHT
    return MMA_MIN_M_WGMMA <= M <= (GEMV_MAX_M_SMALL if small else GEMV_MAX_M_WGMMA) and forced_path() is None


def forced_path() -> str | None:
    """The kernel family ``HLWQ_PATH`` forces (one of ``PATHS``), or None."""
    forced = os.environ.get("HLWQ_PATH")
    if forced and forced not in PATHS:
        raise ValueError(f"HLWQ_PATH must be one of {PATHS}, got {forced!r}")
    return forced or None


def m_bucket(M: int) -> int:
    return 1 << max(0, (M - 1).bit_length())


def _rows_per_program(N: int, slices: int, M: int, R: int, sm_count: int, per_sm: int) -> int:
    """Rows per program (a multiple of R) that gives about ``per_sm`` programs per SM."""
    return max(R, -(-N * slices * M // (per_sm * sm_count * R)) * R)


def gemv_tile(tile: tuple, M: int, N: int, k_pad: int, sm_count: int, bits: int, mb: int = 1) -> dict:
    """The GEMV config of a tile ``(VEC, R, programs per SM[, WARP_PARTS])`` for (M, N, K_pad) with ``mb``
    activation rows a program: its rows per program sized for that many programs per SM."""
    VEC, R, per_sm, *parts = tile
    slices = -(-k_pad // slice_codes(bits, VEC))
    config = dict(VEC=VEC, R=R, ROWS=_rows_per_program(N, slices, -(-M // mb), R, sm_count, per_sm), num_warps=4)
    if parts:
        config["WARP_PARTS"] = parts[0]
    if mb > 1:
        config["MB"] = mb
    return config


# GEMV tiles (VEC, R, programs per SM[, WARP_PARTS]), measured on H100 (benchmarks/NOTES.md, session 3):
# VEC = 4 (a warp per row slice, split-K over 1024-position slices at Q4/Q5) wins on
# the large shapes; VEC = 16 (the four warps side by side along K: one 4096-position
# slice, no split-K up to K = 4096) on the small ones (N * K <= 4096**2). With VEC = 16,
# a partial sum per warp (WARP_PARTS = 4) was never slower than summing across warps
# every iteration on the K = 4096 shapes timed, and fastest with R = 8 at Q4 (H200, session 9:
# 14336 x 4096 Q4 18.3 -> 16.9 us, Q5 21.6 -> 21.3 us; RESULTS.md section 9).
# From M = 2 each candidate also comes with two activation rows per program (MB = 2: the weight decoded once for
# both), first: at M = 2 it was 1.03-1.31x faster than one row per program (H200, session 10, Q4 and Q5 on
# 14336 x 4096 and 4096 x 4096: Q5 14336 x 4096 35.6 -> 27.2 us; RESULTS.md section 10).
_GEMV_LARGE = ((4, 8, 7), (4, 16, 4), (4, 8, 5), (16, 4, 4, 4), (16, 8, 3, 4))
_GEMV_LARGE_MB2 = ((16, 4, 4, 4), (4, 8, 5), (4, 16, 4), (16, 8, 3, 4), (4, 8, 7))  # MB = 2; the first won at Q4, Q5
_GEMV_SMALL = ((16, 4, 4, 4), (16, 4, 4), (16, 8, 2, 4), (16, 4, 2), (16, 2, 4), (4, 8, 7))


def _wgmma_candidates(M: int, N: int, k_pad: int, sm_count: int, BM: int | None = None) -> list[dict]:
    """Register-operand tensor-core tiles: 64 rows per warpgroup, split-K to ~4 programs per SM, the favourite first.

    Measured on H100 (benchmarks/NOTES.md, session 4): the kernel waits on memory,
    so more programs per SM (split-K) and 3-4 pipeline stages pay. On the H200
    (session 6), from BM = 64: session 5's eight-dot step (``one_dot=False``,
    fewer live registers) won for Q5 at M = 64, and 128 rows on 8 warps (two
    warpgroups on one activation tile) won for Q4 on 14336 x 4096; at BM = 16 a
    96-register cap was 2 us faster on 14336 x 4096 in one run and equal
    elsewhere. ``BM`` defaults to the M bucket, 16 to 64 (``benchmarks/diag_paths.py``
    times other tiles).
    """
    BM = BM or min(max(16, m_bucket(M)), 64)
    steps = k_pad // 128  # 16 plane-0 words per step
    tiles = -(-N // 64) * -(-M // BM)
    split = 1
    while tiles * split < 4 * sm_count and steps // (split * 2) >= 4:
        split *= 2
    splits = [split] + ([split // 2] if split > 1 else []) + ([split * 2] if steps // (split * 2) >= 2 else [])
    base = dict(BM=BM, BN=64, num_warps=4, num_stages=3) | (dict(one_dot=False) if BM >= 64 else {})
    out = [dict(base, SPLIT_K=s) for s in splits]
    out.append(dict(out[0], num_stages=4))
    if BM == 16:
        out.append(dict(out[0], maxnreg=96))
    if BM >= 64:
        out += [dict(c, one_dot=True) for c in out[: len(splits)]]
        # half the split: best on every shape timed (one 8-warp program of ~200 registers fills an SM)
        out.append(dict(BM=BM, BN=128, SPLIT_K=max(1, split // 2), num_warps=8, num_stages=3))
    return out


# The tensor-core GEMV (kernels.tcgemv) competes with the register-operand tensor-core kernel for M <= TC_MAX_M:
# one program of four warps per 16-row tiles, two blocks of K per warp, ~4 programs per SM, with and without the
# warps' sums added in the program (WARP_SUM). Measured on the H200 (session 12, benchmarks/RESULTS.md section 12):
# faster at M = 4..8 on 14336 x 4096 and 4096 x 14336 (29.1-33.8 against 35.3-36.9 us with the FWHT), no faster on
# 4096 x 4096, slower at M = 16 and at M = 1 than the GEMV; so it is timed beside the wgmma tiles, not forced
# (kernels._tensor_core_linear asks for "wgmma+tc" only for M <= TC_MAX_M).
TC_MAX_M = 8


def _tc_candidates(N: int, k_pad: int, sm_count: int) -> list[dict]:
    k_programs = -(-k_pad // (128 * 4 * 2))  # four warps of two blocks each
    rows = max(16, -(-N // (max(1, 4 * sm_count // k_programs) * 16)) * 16)
    base = dict(kernel="tc", num_warps=4, KB=2, MG=1, ROWS=rows)
    return [dict(base, WARP_SUM=True), dict(base, WARP_SUM=False)]


# The warp-specialized kernel (kernels.wsmma, sm_90) competes from M = WS_MIN_M: measured on the H200 (session 15,
# benchmarks/RESULTS.md section 15) 1.3-1.8x faster than the wgmma kernel or dequantize + cuBLAS at M = 64..128 on
# the large shapes, slower at M = 16 and from M = 512; so it is timed beside them, not forced.
WS_MIN_M = 16


def _ws_split(M: int, N: int, k_pad: int, sm_count: int, BM: int) -> int:
    """Split K of the warp-specialized kernels (128 weight rows a program): until the programs about fill the SMs,
    keeping >= 4 blocks per slice."""
    programs = -(-N // 128) * -(-M // BM)
    return max(1, min(k_pad // 128 // 4, round(sm_count / programs)))


def _ws_candidates(M: int, N: int, k_pad: int, sm_count: int) -> list[dict]:
    """128 weight rows and ``BM`` = the M bucket (16..128, then 256) activation rows per program, one program per
    SM: split K until the programs about fill the GPU (keeping >= 4 blocks per slice), and half that split."""
    BM = min(256, max(16, m_bucket(M)))
    split = _ws_split(M, N, k_pad, sm_count, BM)
    base = dict(kernel="ws", BM=BM, QSTAGES=4, WSTAGES=2, XSTAGES=2, DEC_WARPS=4, DEC_REGS=168, num_warps=4)
    if BM == 256:  # two MMA warpgroups; the rings fill the shared memory; 136 decoder registers leave them 176.
        # Each program starting at its own block (STAGGER): 6-14% less time at M = 256 and 512 on 14336 x 4096 and
        # 4096 x 14336 (H200, session 17, RESULTS.md 17b and 17c, same-run pairs); within 2% either way at
        # BM <= 64, from 5% faster to 8% slower at BM = 128 (17b): not a candidate there.
        base.update(QSTAGES=3, DEC_REGS=136, num_warps=8, STAGGER=True)
    out = [dict(base, SPLIT_K=s) for s in sorted({split, max(1, split // 2)}, reverse=True)]
    # Deeper rings where shared memory allows: 2% faster at BM = 16 and 64 (Q5, 14336 x 4096 and 4096 x 14336), as
    # fast as a fourth slot or twelve word slots; at BM = 128 more word slots were slower (H200, session 16,
    # RESULTS.md 16b) and a third activation slot 3-8% faster with two decoding partitions (session 17, 17b; with
    # one, not compared in one run). Eight decoding warps were within 2% of four (16b): not a candidate.
    deep = ([dict(out[0], QSTAGES=8, WSTAGES=3, XSTAGES=3)] if BM <= 64 else
            [dict(out[0], XSTAGES=3)] if BM == 128 else [])
    out += deep
    # Two decoding partitions taking turns at the steps (the decoders bound the kernel, issuing on a third of their
    # cycles: RESULTS.md 16c); 128 registers each leave the MMA warps 232.
    if BM <= 128:
        out += [dict(c, DEC_PARTS=2, DEC_REGS=128) for c in [out[0]] + deep]
    return out


# The warp-specialized kernel with the weight as wgmma's register operand (kernels.wsrs, sm_90): measured on the
# H200 (session 18, benchmarks/RESULTS.md 18d) with 11-25% less time than kernels.wsmma at M = 16..64 on 14336 x 4096,
# 4096 x 14336 and 4096 x 4096, with two consumer warpgroups, split K as the ws kernel's and rings of 4 word and 3
# activation slots (four warpgroups, half or twice that split: 2-100% slower; other rings up to 10% slower, at best
# 1% faster); timed beside the other families from the GEMV's range up.
# Its activations as two [BM, 64] boxes a step (XBOX = 64, a block-local order) or eight [BM, 16] (XBOX = 16), in
# one kernel (H200, session 20, RESULTS.md 20b): 64 took 1.4-5.0% less time at BM = 16 on Q5 and 0.5-4.8% less or
# 1.2% more on Q4; at BM = 32 and 64, 0.4-6.1% more on Q5 and 0.5-3.2% less on Q4. Both are candidates.
# Past M = 64 (session 21, RESULTS.md 21a): BM = 128 (the consumers given 232 registers) and 256 (m64n256 MMAs, the
# norms on the 16-bit weights: NORM_ACC=False, one accumulator, the only way it fits); BM = 256 took 18-33% less time
# than BM = 128 from M = 256 on 14336 x 4096, from 4% more to 34% less on 4096 x 14336; two [256, 64] activation
# boxes a step 6-14% less than eight [256, 16] in run 1 (within 1% either way on Q4 14336 x 4096 in run 2). At
# BM = 128 the norms on the sums and on the weights took the same time within 2% with the shipped epilogue
# (runs 2 and 4a); the sums stay, the weight rounded once.
# At BM = 16 also four consumer warpgroups taking turns at the blocks (PHASES = 2, 120 registers a thread), with four
# activation slots: with three, a slot's uses alternate between the two pairs of warpgroups and a wait could pass on
# the phase before (found in review, session 29). With four slots (H200, RESULTS.md 30a): 6.2-10.8% less time than
# the two-warpgroup favourite at M = 4, 8 and 16 on 14336 x 4096 and 4096 x 14336, Q4 and Q5, and from 1.9% less to
# 0.7% more on 4096 x 4096; so it comes first at BM = 16 (what candidates("wsrs")[0] gives benchmarks and tests; the
# tuner times every candidate, and wsrs is never the first family). (At BM = 32 Triton 3.9 spills a register.)
WSRS_MAX_M = 2048


def _wsrs_candidates(M: int, N: int, k_pad: int, sm_count: int) -> list[dict]:
    """128 weight rows and ``BM`` = the M bucket (16..256) activation rows per program; split K as the ws kernel;
    activation boxes of 64 and of 16 columns, the favourite first (64 at BM = 16 and 128, 16 at 32 and 64), at
    BM = 16 four consumer warpgroups before them, and after them, where the grid leaves half the SMs idle or more, the
    :func:`_more_programs` ones; in the 256 bucket (M = 129..) BM = 256 with boxes of 64 columns, then BM = 128."""
    def config(BM: int, XBOX: int) -> dict:
        out = dict(kernel="wsrs", BM=BM, SPLIT_K=_ws_split(M, N, k_pad, sm_count, BM), QSTAGES=4, XSTAGES=3,
                   REGS=232 if BM >= 128 else 168, XBOX=XBOX)
        if BM == 256:  # two 64 KB activation slots; one accumulator
            out.update(XSTAGES=2, REGS=240, NORM_ACC=False)
        return out

    BM = min(256, max(16, m_bucket(M)))
    if BM == 256:
        return [config(256, 64), config(128, 64)]
    out = [config(BM, box) for box in ((64, 16) if BM in (16, 128) else (16, 64))]
    if BM == 16:  # four consumer warpgroups (rings of even depth) first, as timed (the comment above)
        out.insert(0, dict(out[0], PHASES=2, REGS=120, XSTAGES=4))
    if BM <= 64 and 2 * -(-N // 128) * out[-1]["SPLIT_K"] <= sm_count:  # (one M tile: BM is M's bucket)
        out += _more_programs(out, k_pad, config)
    return out


def _more_programs(configs: list[dict], k_pad: int, config: Callable[[int, int], dict]) -> list[dict]:
    """`wsrs` candidates for a grid that leaves at least half the SMs idle (few 128-row tiles, split K held at four
    blocks a slice): each of ``configs`` with twice the split, down to two blocks a slice on average (on a K of
    uneven blocks the last slice may be empty, which the kernel allows), and at BM = 64 also BM = 32
    (``config(BM, XBOX)`` makes one). Measured on an H200 on 1024 x 4096 (64 programs; RESULTS 32c, kernel
    alone with its sum): twice the split 2.5-6.7% less time at M = 16 and 32 (from 1.6% more to 6.2% less at 64),
    BM = 32 7.6-9.9% less at M = 64; on 4096 x 4096 (128 programs, not a case for this) either took 20-36% more."""
    split = configs[-1]["SPLIT_K"]
    doubled = min(2 * split, k_pad // 128 // 2)
    out = [dict(c, SPLIT_K=doubled) for c in configs] if doubled > split else []
    if configs[-1]["BM"] == 64:
        out += [config(32, box) for box in (16, 64)]
    return out


_FAMILIES = {
    "wgmma": _wgmma_candidates,
    "tc": lambda M, N, k_pad, sm: _tc_candidates(N, k_pad, sm),
    "ws": _ws_candidates,
    "wsrs": _wsrs_candidates,
    "dequant": lambda M, N, k_pad, sm: [dict(kernel="dequant")],
}


def _family_candidates(family: str, M: int, N: int, k_pad: int, sm_count: int, bits: int) -> list[dict]:
    """One family's configs among others' (each with its ``kernel``; the GEMV's as :func:`candidates` gives them)."""
    if family == "gemv":
        return [dict(config, kernel="gemv") for config in candidates("gemv", M, N, k_pad, sm_count, bits)]
    return _FAMILIES[family](M, N, k_pad, sm_count)


def candidates(kernel: str, M: int, N: int, k_pad: int, sm_count: int, bits: int) -> list[dict]:
    """Configs worth timing for a kernel on (M, N, K_pad), the favourite first.

    ``kernel`` is "gemv", "mma", or tensor-core families joined by "+" (``kernels._tensor_core_linear``):
    "wgmma", "tc" (the tensor-core GEMV, ``kernel="tc"``), "ws" (the warp-specialized kernel, ``kernel="ws"``),
    "wsrs" (its register-operand variant, ``kernel="wsrs"``), "dequant" (dequantize + cuBLAS,
    ``kernel="dequant"``) and, first where it competes, "gemv" (``kernel="gemv"``), e.g. "wgmma+tc", "dequant+ws" or
    "gemv+wgmma+tc+wsrs"; the first family's
    favourite is the default (untuned, or during CUDA-graph capture).
    """
    families = kernel.split("+")
    if len(families) > 1 or kernel in _FAMILIES:
        unknown = [family for family in families if family != "gemv" and family not in _FAMILIES]
        if unknown:
            raise ValueError(f"no tuning candidates for kernel {kernel!r}: {unknown} not among the families "
                             f"{['gemv', *sorted(_FAMILIES)]}")
        return [config for family in families for config in _family_candidates(family, M, N, k_pad, sm_count, bits)]
    out = []
    if kernel == "gemv":
        small = N * k_pad <= GEMV_SMALL_WEIGHT
        # two rows per program first (faster at M = 2 wherever timed); not at 2-3 bits, whose 16 codes per
        # plane-0 word would double 64 activation registers per thread (never timed)
        for mb in (2, 1) if M > 1 and planes(bits)["W0"] >= 4 else (1,):
            for tile in _GEMV_SMALL if small else _GEMV_LARGE_MB2 if mb == 2 else _GEMV_LARGE:
                config = gemv_tile(tile, M, N, k_pad, sm_count, bits, mb)
                if config not in out:
                    out.append(config)
        # Partials per warp with split-K lost where timed (K = 14336): never the untuned default.
        out = sorted(out, key=lambda c: c.get("WARP_PARTS", 1) > 1 and -(-k_pad // slice_codes(bits, c["VEC"])) > 1)
        # The next rows' loads at the loop's top: at Q5 the best tile with them beat the best without by 2-5% on
        # 4096 x 4096 and 1024 x 4096 (H200, session 13, RESULTS.md 13d). At M = 1 on 14336 x 4096 and 4096 x 14336
        # it lost by 2-4% on that H200 with session 13's kernel, and won by 5-10% on those and two more large shapes
        # on an H100 in session 68 (9% and 2% on a second H100), so it is timed there too and kept where faster. It
        # lost by 12-14% at M = 2 on two large shapes and by 7-18% at Q4 (session 68); other widths never timed.
        if bits == 5 and (M == 1 or small):
            out += [dict(c, EARLY=True) for c in out]
        return out
    if kernel != "mma":
        raise ValueError(f"no tuning candidates for kernel {kernel!r}: expected 'gemv', 'mma' or families of "
                         f"{sorted(_FAMILIES)} joined by '+'")
    BM = min(max(16, m_bucket(M)), 64)
    per_word = 32 // planes(bits)["W0"]
    for BN, VEC in ((128, 2), (128, 1), (64, 2), (64, 1)):
        tiles = -(-N // BN) * -(-M // BM)
        steps = -(-k_pad // (32 * VEC * per_word))
        split = 1  # split K until ~2 programs per SM, keeping >= 4 steps per split
        while tiles * split < 2 * sm_count and steps // (split * 2) >= 4:
            split *= 2
        for s in (split, 2 * split) if steps // (split * 2) >= 2 else (split,):
            out.append(dict(BM=BM, BN=BN, VEC=VEC, SPLIT_K=s, num_warps=4, num_stages=1))
    return out


_TUNED: dict[str, dict] = {}  # key_for(...) -> config, and key_for(...) + "/tuning_s" -> seconds
_LOADED: set[str] = set()  # cache files read into _TUNED
_UNWRITABLE: set[str] = set()  # cache files a write failed for (warned once)


def autotune() -> bool:
    """``HLWQ_AUTOTUNE``: False for ``0`` (an untuned key gets the candidates' favourite), True for ``1`` or unset."""
    return env_flag("HLWQ_AUTOTUNE", "1") is not False


_TAGS: dict[torch.device, str] = {}  # device_tag's answers for devices with an index (a dict: cheaper than lru_cache)


def device_tag(device: torch.device) -> str:
    """The name a device's tuning keys (:func:`key_for`) and cache file go by: its GPU model's (spaces as ``_``), so
    that two cards of one model share choices; for a device other than a GPU, its type (nothing is tuned there).
    ``cuda`` without an index is the current device, asked each time."""
    tag = _TAGS.get(device)
    if tag is None:
        if device.type != "cuda":
            tag = device.type
        else:
            tag = _gpu_model(torch.cuda.current_device() if device.index is None else device.index)
        if device.index is not None or device.type != "cuda":
            _TAGS[device] = tag
    return tag


def _gpu_model(index: int) -> str:
    return torch.cuda.get_device_name(index).replace(" ", "_")


def key_for(kernel: str, M: int, N: int, k_pad: int, bits: int, device: torch.device) -> str:
    """A config's key in the process's tuning table: ``"<GPU model>:<families>/<N>x<K_pad>/q<bits>/m<bucket>"``; the
    cache file, one per model, holds its keys without the model (:func:`_prefix`)."""
    return f"{_prefix(device)}{kernel}{_layer_key(M, N, k_pad, bits)}"


def _prefix(device: torch.device) -> str:
    """What the table's keys of ``device``'s GPU model start with, and its cache file's keys lack."""
    return device_tag(device) + ":"


def _cache_file(device: torch.device) -> Path:
    """The device's cache file: its GPU model's (:func:`_cache_path`)."""
    return _cache_path(device_tag(device))


@functools.lru_cache(maxsize=None)
def _cache_path(model: str) -> Path:
    """A GPU model's cache file under ``HLWQ_CACHE_DIR`` (unset or empty: ``~/.cache/hlwq_ops``; ``~`` expanded), as
    the process first asks for it."""
    root = Path(os.environ.get("HLWQ_CACHE_DIR") or Path.home() / ".cache" / "hlwq_ops").expanduser()
    return root / f"configs-{_kernels_fingerprint()}-{model}-triton{__import__('triton').__version__}.json"


@functools.lru_cache(maxsize=None)
def _kernels_fingerprint() -> str:
    """A digest of the package's version and its kernel sources (this module's candidates among them): a cache file
    holds the choices of the kernels that timed them. Choices timed before a kernel changed -- a tile that no longer
    pays, or a parameter that kept its name but not its meaning -- would otherwise be used as they are (a version in
    the name, bumped by hand, was forgotten at times); a change re-tunes instead, seconds a shape and M bucket. The
    version keeps an install without sources (bytecode only) apart from other versions. Files of other digests are
    left in place."""
    from .. import __version__

    digest = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_entry(key, value) -> bool:
    """What this module writes: a config (names to finite numbers, flags or a family's name) or a tuning time."""
    if not isinstance(key, str):
        return False
    if key.endswith("/tuning_s"):
        return _is_number(value)
    return isinstance(value, dict) and bool(value) and all(
        isinstance(name, str) and (isinstance(v, (bool, str)) or _is_number(v)) for name, v in value.items())


def _read(path: Path) -> tuple[dict, int]:
    """A cache file's entries and how many others it held; an unreadable or broken file reads as empty (it only costs
    a re-tune)."""
    try:
        tuned = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, 0
    if not isinstance(tuned, dict):
        return {}, 1
    kept = {k: v for k, v in tuned.items() if _is_entry(k, v)}
    return kept, len(tuned) - len(kept)


def _current(key: str, config: dict, sm_count: int) -> bool:
    """Whether a cached config takes the parameters of one of this version's candidates for its key, and names the
    same kernel: what a cache file edited or damaged holds (an earlier version's is another file, see
    :func:`_cache_path`) would otherwise fail at launch, a bare KeyError there."""
    try:
        kernel, shape, bits, bucket = key.rsplit("/", 3)
        N, k_pad = map(int, shape.split("x"))
        configs = candidates(kernel, int(bucket.removeprefix("m")), N, k_pad, sm_count, int(bits.removeprefix("q")))
    except Exception:  # not a key this version makes (an unknown family, a malformed or zero shape): not its config
        return False
    return any(config.keys() == c.keys() and config.get("kernel") == c.get("kernel") for c in configs)


def _stale(entries: dict, device: torch.device) -> set[str]:
    """The keys of the configs among a cache's ``entries`` that this version's kernels do not take (:func:`_current`);
    an entry whose key, less ``/tuning_s``, is one of them goes with them."""
    configs = [key for key in entries if not key.endswith("/tuning_s")]
    sms = sm_count(device) if configs else 0
    return {key for key in configs if not _current(key, entries[key], sms)}


def _load(device: torch.device) -> None:
    """Read the device's cache file into the table, once a process, its keys prefixed with the device's model."""
    path = _cache_file(device)
    if str(path) in _LOADED:
        return
    _LOADED.add(str(path))
    tuned, dropped = _read(path)
    if dropped:
        logger.warning("hlwq tuning cache %s: %d entries that are not configs or tuning times ignored", path, dropped)
    stale = _stale(tuned, device)
    if stale:
        logger.warning("hlwq tuning cache %s: %d configs that this version's kernels do not take (e.g. %s: %s) "
                       "ignored and removed from the file at its next save; a call needing one tunes it again",
                       path, len(stale), min(stale), tuned[min(stale)])
    prefix = _prefix(device)
    _TUNED.update({prefix + key: value for key, value in tuned.items() if key.removesuffix("/tuning_s") not in stale})


def _of_device(device: torch.device) -> dict:
    """The device's model's entries of the table, keyed as on its cache file (without the model)."""
    prefix = _prefix(device)
    return {key.removeprefix(prefix): value for key, value in _TUNED.items() if key.startswith(prefix)}


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``path``'s lock file (where ``fcntl`` exists): processes sharing a cache write it one at a time."""
    if fcntl is None:  # (Windows: unlocked; the rename still keeps the file whole)
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _save(device: torch.device) -> None:
    """Merge this process's table into the device's cache file: what other processes saved since it was read stays
    (several ranks tuning at once), this process's choices win where both tuned a key, and stale configs on the file
    (:func:`_stale`) go, with their tuning times. Only the device's model's entries go there."""
    path = _cache_file(device)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            on_file = _read(path)[0]
            stale = _stale(on_file, device)
            merged = {**{k: v for k, v in on_file.items() if k.removesuffix("/tuning_s") not in stale},
                      **_of_device(device)}
            # written aside, then renamed: a process reading it never sees half a file
            tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
            os.replace(tmp, path)
    except OSError as error:  # (a read-only home: tuning still holds for this process)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if str(path) not in _UNWRITABLE:
            _UNWRITABLE.add(str(path))
            logger.warning("hlwq tuning cache %s not written (%s): this process's tuning is not kept", path, error)


# layout -> data address -> the live tensors noted there (weakly). Several tensors can wrap one weight's memory
# (nn.Parameter detaches, views, moves); whichever of them is alive serves.
_SAME_SHAPE: dict[tuple, dict[int, list[tuple[weakref.ref, weakref.ref]]]] = {}


def _layout(qdata: torch.Tensor, scale: torch.Tensor) -> tuple:
    # alignment too: a kernel that reads 16-byte vectors (kernels.tcgemv) refuses a weight that is not
    return qdata.device, qdata.shape, qdata.stride(), qdata.data_ptr() % 16 == 0, scale.shape, scale.stride()


def remember(qdata: torch.Tensor, scale: torch.Tensor) -> None:
    """Note a packed weight (weakly), so that tuning another weight of its layout can time on it.

    For real CUDA tensors (:func:`hlwq_ops.kernels.note_weight` checks).
    """
    tensors = _SAME_SHAPE.setdefault(_layout(qdata, scale), {}).setdefault(qdata.data_ptr(), [])
    alive = [(q, s) for q, s in tensors if q() is not None and s() is not None]
    if not any(q() is qdata for q, _ in alive):
        alive.append((weakref.ref(qdata), weakref.ref(scale)))
    tensors[:] = alive


def _noted(qdata: torch.Tensor, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Live noted weights of ``qdata``'s layout at other addresses, one per address; drops stale notes."""
    layout = _layout(qdata, scale)
    group = _SAME_SHAPE.get(layout, {})
    out = []
    for ptr, tensors in list(group.items()):
        live = [(q(), s()) for q, s in tensors]
        live = [(q, s) for q, s in live if q is not None and s is not None and q.data_ptr() == ptr
                and _layout(q, s) == layout]  # freed, moved or reshaped since: dropped
        if not live:
            group.pop(ptr, None)
        elif ptr != qdata.data_ptr():
            out.append(live[0])
    return out


def _weight_set(qdata: torch.Tensor, scale: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The weight and others of its layout spanning twice the L2 (at most 64 in all), so timings read HBM.

    Live weights noted by :func:`remember` (a model's other layers) come first;
    copies make up the rest. Copies are memory the model does not otherwise
    use -- 113 MB for a Q5 14336 x 4096 weight on a 60 MiB L2 -- and would count
    in the process's peak.
    """
    l2 = getattr(torch.cuda.get_device_properties(qdata.device), "L2_cache_size", 50 << 20)
    n = min(64, max(1, -(-2 * l2 // (qdata.nbytes + scale.nbytes))))
    out = [(qdata, scale)] + _noted(qdata, scale)[: n - 1]
    return out + [(qdata.clone(), scale.clone()) for _ in range(n - len(out))]


@functools.cache
def _timing_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream every timing on ``device`` runs on. torch keeps a cuBLAS workspace for each stream
    cuBLAS has run on, for the life of the process, and each timing's own ``torch.cuda.Stream()`` came from a pool
    of 32 streams: after a first call's tuning on an H100, four 32 MiB blocks allocated in the dequantize + cuBLAS
    candidate stayed allocated, most likely such workspaces (``benchmarks/RESULTS.md`` 45b)."""
    return torch.cuda.Stream(device)


def _time_over(run: Callable, config: dict, weights: list, ms: float = 1.0) -> float:
    """Milliseconds per call: one CUDA graph calling ``run`` on every weight in turn, replayed for about ``ms``
    milliseconds after a warm-up as long.

    What a decode step sees: no L2 hits, no launch gaps (``do_bench`` would
    either read the weight from L2 or, with its flush, leave dirty lines whose
    write-back lands in the timed kernel). The warm-up: a candidate is timed right after its compile left the GPU
    idle for seconds; timed by five replays after one (0.3 ms on a Q5 14336 x 4096 weight), 3 of 8 fresh tunings
    picked a config 5% slower than the other (``benchmarks/NOTES.md``, session 50). In session 52 neither that
    timing nor this one picked it in 4 fresh tunings each (``benchmarks/RESULTS.md`` 52b): that the clock was the
    cause, and that this cures it, is not shown. In session 53 the first two candidates' first timings in a process's
    first tuning read 7-8% fast, not slow (RESULTS.md 53b): :func:`_fastest` judges a candidate on its later two.
    """
    stream = _timing_stream(weights[0][0].device)
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run(config, *weights[0])  # compile and warm up outside the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for q, s in weights:
                run(config, q, s)
        one_start, one_end, start, end = (torch.cuda.Event(enable_timing=True) for _ in range(4))
        one_start.record(stream)
        graph.replay()  # one replay, timed to size the warm-up and the timing
        one_end.record(stream)
        one_end.synchronize()
        reps = max(2, math.ceil(ms / max(one_start.elapsed_time(one_end), 1e-3)))
        for _ in range(reps):
            graph.replay()
        start.record(stream)
        for _ in range(reps):
            graph.replay()
        end.record(stream)
    end.synchronize()
    torch.cuda.current_stream().wait_stream(stream)
    return start.elapsed_time(end) / (reps * len(weights))


def _fastest(configs: list[dict], time_one: Callable[[dict], float], key: str) -> dict:
    """The config ``time_one`` times fastest, each timed three times: in order (where each follows its own compile),
    then in reverse and in order again, judged on the better of those two: in a process's first tuning the first
    timings of its first candidates have read fast (``benchmarks/RESULTS.md`` 53b). One this GPU cannot run
    (``OutOfResources``, e.g. shared memory) is skipped; so is one the installed Triton cannot compile (e.g. an
    experimental Gluon API it changed), with a warning."""
    import triton
    import triton.compiler.errors
    import triton.runtime.errors

    timings, failures = [], 0
    for config in configs:
        try:
            timings.append([time_one(config), config])
        except triton.runtime.errors.OutOfResources:
            continue
        except triton.compiler.errors.CompilationError as error:
            lines = str(error).strip().splitlines()
            logger.warning("hlwq tuning %s: candidate %s does not compile with Triton %s, skipped: %s", key, config,
                           triton.__version__, lines[-1] if lines else type(error).__name__)
            failures += 1
    if not timings:
        raise RuntimeError(f"hlwq tuning {key}: no candidate ran ({failures} of {len(configs)} did not "
                           "compile); HLWQ_PATH=dequant avoids the tensor-core kernels")
    # The first pass not judged: in a process's first tuning its first two candidates read 7-8% fast there, and the
    # better of two then picked a tile 5% slower (Q4 1024 x 4096, H100, benchmarks/RESULTS.md 53b).
    for timing in reversed(timings):
        timing[0] = time_one(timing[1])
    for timing in timings:
        timing[0] = min(timing[0], time_one(timing[1]))
    return min(timings, key=lambda t: t[0])[1]


def _layer_key(M: int, N: int, k_pad: int, bits: int) -> str:
    """A tuning key past its kernel family: the layer's shape and bits and M's bucket."""
    return f"/{N}x{k_pad}/q{bits}/m{m_bucket(M)}"


def tuned_choices(M: int, N: int, k_pad: int, bits: int, device: torch.device | str = "cuda") -> dict[str, dict]:
    """The configs tuned (or loaded from the cache) in this process for a (N, K_pad) layer at ``bits`` and M's
    bucket on ``device``'s GPU model, by tuning key less the model (``"<families>/<N>x<K_pad>/q<bits>/m<bucket>"``):
    what the benchmarks report as the tuner's choice."""
    tail = _layer_key(M, N, k_pad, bits)
    return {key: config for key, config in _of_device(torch.device(device)).items() if key.endswith(tail)}


def tuned(kernel: str, M: int, N: int, k_pad: int, bits: int, device: torch.device) -> dict | None:
    """The config :func:`config_for` tuned (or loaded from the cache) for this key, or None; tunes nothing."""
    _load(device)
    return _TUNED.get(key_for(kernel, M, N, k_pad, bits, device))


def config_for(
    kernel: str,
    M: int,
    N: int,
    k_pad: int,
    bits: int,
    weight: tuple[torch.Tensor, torch.Tensor] | Callable[[], tuple[torch.Tensor, torch.Tensor]],
    run: Callable[[dict, torch.Tensor, torch.Tensor], object],
    device: torch.device | None = None,
) -> dict:
    """The config of ``kernel`` for this shape, tuned on first use (see the module docstring).

    Args:
        weight: ``(qdata, scale)``, the packed weight the call is for; or a function making one of the shape, called
            only to tune (a GEMV group's weights stacked), with ``device``.
        run: ``run(config, qdata, scale)`` launches the kernel (used for timing).
    """
    if device is None:
        if callable(weight):
            raise ValueError("tuning.config_for: a weight given as a function needs its device")
        device = weight[0].device
    if device.type != "cuda":
        return candidates(kernel, M, N, k_pad, 8, bits)[0]
    _load(device)
    key = key_for(kernel, M, N, k_pad, bits, device)
    if key in _TUNED:  # the hot path: one dict lookup per call
        return _TUNED[key]
    configs = candidates(kernel, M, N, k_pad, sm_count(device), bits)
    if not autotune() or torch.cuda.is_current_stream_capturing():
        return configs[0]
    start = time.perf_counter()
    weights = _weight_set(*(weight() if callable(weight) else weight))
    best = _fastest(configs, lambda config, weights=weights: _time_over(run, config, weights), key)
    del weights
    _TUNED[key] = best
    _TUNED[key + "/tuning_s"] = round(time.perf_counter() - start, 2)
    _save(device)
    return best
