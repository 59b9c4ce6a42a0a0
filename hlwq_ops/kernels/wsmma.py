"""Warp-specialized tensor-core kernel for larger M (Hopper, Gluon): decoding warps feed a ring of 16-bit weight tiles.

``y.T = Wr @ xr.T``, the weight rows as the MMA's M dimension (so a tile of
``BM`` = 8..128 activation rows is the instruction's N; ``BM`` = 256 is two
warpgroups' 128 each, the weight decoded once for both). Each program owns
``BN`` = 128 weight rows, one ``BM``-row tile of activations and one of
``SPLIT_K`` slices of K, and runs four partitions at once (five with two
decoding partitions)
(``gl.warp_specialize``), one step being one block of 128 positions:

- two one-warp TMA loaders: the block's plane-0 words (a ``[128, 16]`` int32
  box) and, at Q5, its plane-1 bytes (``[128, 16]`` bytes) into a ring of
  ``QSTAGES`` slots; the block's ``[BM, 128]`` activations (two ``[BM, 64]``
  boxes, 128-byte swizzle) into a ring of ``XSTAGES``;
- the *decoders* (``DEC_WARPS`` warps; or two such partitions taking turns at
  the steps, ``DEC_PARTS`` = 2): read a slot's words, spread the fifth
  bits into the nibbles (as :mod:`.decode` does), look every code up with a
  warp shuffle (the codebook held one entry per lane), multiply it by the
  block's norm in the activations' 16-bit type (both rounded to it first) and
  store the ``[BN, 128]`` tile into a ring of ``WSTAGES`` slots, handing the
  word slot back only after that. The weight is decoded in K order, so the
  activations are the FWHT's output as it is (no permutation);
- the *MMA warps* (the default partition, one warpgroup, two at BM = 256):
  wait for a step's slots, issue its ``wgmma`` asynchronously, and free the
  slots of the step before once that one's MMAs have retired.

All partitions walk the program's blocks in the same order: from its first, or
(``STAGGER``) from one that differs between neighbouring programs, wrapping
around, so that the programs do not all ask the L2 for the same activation
columns at once (BM = 256: 6-14% less time, ``benchmarks/NOTES.md`` session 17).

Each ring hands slots over with a pair of ``mbarrier`` (ready / empty). So the
decode of one step overlaps the loads and MMAs of others, which the plain
Triton kernels (:mod:`.wgmma`, :mod:`.mma`) cannot express: there the decode,
the store to shared memory and the MMA of a program follow one another
(``benchmarks/NOTES.md``, session 11). The weight is decoded once per ``BM``
activation rows. Measured (``benchmarks/NOTES.md``, sessions 15 to 17): the
decoders issue on about a third of their cycles; at M <= 64 the whole kernel
takes longer than either half alone, with the decode or the MMAs switched off
(they contend for something, likely the shared-memory pipe; not confirmed); at
BM >= 128 the activation ring's latency and the MMAs weigh most.

Gluon has no interpreter, so this kernel runs only on a GPU (sm_90) with a
Triton that has ``triton.experimental.gluon``; :func:`runs_on` says where.
Supported layers: :func:`supports` (bits 4 and 5, the standard codebook, blocks
of 128).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from ..codebook import codebook as standard_codebook
from ..format import unpack_codes
from .common import arrival_counters, as_words, capability, unit_stride
from .launch import Launch, Tma, cdiv, config_key, config_of, plan_cache

try:  # Gluon is experimental: present in Triton 3.4+, absent from older ones
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        tma,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
except ImportError:  # pragma: no cover - depends on the installed Triton
    gluon = None
else:
    # Builtins Gluon renamed after Triton 3.6 (the old names then raise): a TMA load is
    # tma.async_copy_global_to_shared there and tma.async_load later, the CTA barrier gl.thread_barrier and
    # gl.barrier. The kernel calls whichever this Triton has (tests/test_kernels.py compiles it for sm_90 with the
    # installed Triton); an untaken branch naming the other would still be resolved by Triton's dependency scan.
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier

__all__ = ["aligned", "runs_on", "split_buffers", "split_workspace", "supports", "ws_mma", "ws_mma_ref"]


def supports(bits: int, block_size: int, codebook: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Whether :func:`ws_mma` serves this layer and (rotated, 16-bit) activation dtype: Q4/Q5, the standard
    codebook, blocks of 128 (a step is one block)."""
    return bits in (4, 5) and block_size == 128 and codebook is None and dtype in (torch.bfloat16, torch.float16)


def runs_on(device: torch.device) -> bool:
    """Whether ``device`` runs the kernel: an sm_90 GPU (``wgmma``) and a Triton with Gluon."""
    return gluon is not None and device.type == "cuda" and capability(device) == (9, 0)


def aligned(qdata: torch.Tensor) -> bool:
    """Whether the packed rows can be TMA boxes: a 16-byte aligned start and row stride, unit column stride."""
    return qdata.data_ptr() % 16 == 0 and qdata.stride(0) % 16 == 0 and qdata.stride(1) == 1


def ws_mma_ref(xr: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
               bits: int, norm_on_sums: bool = False) -> torch.Tensor:
    """Plain-torch equivalent of :func:`ws_mma`, in float64 (the test oracle): the rotated weight as the decoders
    make it -- the centroid and ``s / sqrt(128)`` each rounded to the activations' 16-bit type, their product
    rounded to it -- times the activations. With ``norm_on_sums`` (the register-operand kernel, :mod:`.wsrs`) only
    the centroid is rounded and the norm stays float32, as that kernel applies it to each block's float32 sums."""
    dtype = xr.dtype if xr.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
    codes = unpack_codes(qdata, bits, 128)
    norm = scale.float() * torch.tensor(1.0 / math.sqrt(128), dtype=torch.float32)
    centroids = standard_codebook(bits, qdata.device)[codes].to(dtype)
    if norm_on_sums:
        wr = centroids.double() * norm.double()[..., None]
    else:  # as the kernel
        wr = centroids * norm.to(dtype)[..., None]
    y = xr.to(dtype).double() @ wr.reshape(qdata.shape[0], -1).double().t()
    return y if bias is None else y + bias.double()


if gluon is not None:

    @gluon.jit
    def _block(i, k_lo, k_hi, start, STAGGER: gl.constexpr):
        """The block of step ``i``: the slice's blocks in order, or (``STAGGER``) in order from its ``start``-th,
        wrapping around, so that the programs do not all ask for the same activation columns at once."""
        blk = k_lo + i
        if STAGGER:
            blk = k_lo + (i + start) % gl.maximum(k_hi - k_lo, 1)
        return blk

    @gluon.jit
    def _lane_codebook(c_ptr, BITS: gl.constexpr, shape: gl.constexpr, layout: gl.constexpr):
        """Every lane's codebook entry, ``c[lane % 2**BITS]``, in each element of a ``shape`` tensor: a code is then
        looked up by :func:`_shuffle` (bits 5 and up ignored)."""
        return gl.inline_asm_elementwise(
            "{ .reg .u32 l; .reg .u64 p; mov.u32 l, %laneid; and.b32 l, l, $2; mul.wide.u32 p, l, 4; "
            "add.u64 p, p, $1; ld.global.nc.b32 $0, [p]; }",
            "=r,l,r",
            [gl.full(shape, 0, gl.int64, layout) + c_ptr.to(gl.int64, bitcast=True),
             gl.full(shape, (1 << BITS) - 1, gl.int32, layout)],
            dtype=gl.int32, is_pure=True, pack=1,
        )

    @gluon.jit
    def _shuffle(c_lane, code):
        """Centroid (float32) of the code in bits 0..4 of each element of ``code`` (int32): lane ``code``'s entry."""
        return gl.inline_asm_elementwise(
            "shfl.sync.idx.b32 $0, $1, $2, 0x1f, 0xffffffff;", "=r,r,r", [c_lane, code],
            dtype=gl.int32, is_pure=True, pack=1,
        ).to(gl.float32, bitcast=True)

    @gluon.jit
    def _slices_sum(ws_ptr, tile, mask, slice_elems, split_k, shape: gl.constexpr, layout: gl.constexpr):
        """A tile's split-K partials summed over the ``split_k`` slices, read past the L1 (other programs wrote
        them; kernels.common.sum_if_last), one slice a round trip (in the register-operand kernel's former in-kernel
        sum, eight at BM = 16 or two at BM = 64 issued together took -4.5% to +4.3% of the time on an H200,
        ``benchmarks/RESULTS.md`` 31a; not measured here)."""
        acc = gl.zeros(shape, gl.float32, layout)
        for part in range(split_k):
            acc += gl.load(ws_ptr + part * slice_elems + tile, mask=mask, other=0.0, cache_modifier=".cg")
        return acc

    @gluon.jit
    def _reset(counter):
        """:func:`.common.reset_counter` in Gluon: the arrival counter back to zero, a relaxed atomic (no fence)."""
        gl.atomic_xchg(counter, 0, sem="relaxed", scope="gpu")

    @gluon.jit
    def _load_words(p0_desc, p1_desc, p0_smem, p1_smem, q_ready, q_empty, n0, k_lo, k_hi, start,
                    BITS: gl.constexpr, QSTAGES: gl.constexpr, STAGGER: gl.constexpr):
        """Per step: TMA the 128 rows' plane-0 words of one block (and its plane-1 bytes at Q5) into a ring slot."""
        WPB: gl.constexpr = 128 * BITS // 32  # int32 words per block
        for i in range(k_hi - k_lo):
            slot = i % QSTAGES
            mbarrier.wait(q_empty.index(slot), ((i // QSTAGES) & 1) ^ 1)
            bar = q_ready.index(slot)
            blk = _block(i, k_lo, k_hi, start, STAGGER)
            if BITS == 5:
                mbarrier.expect(bar, p0_desc.block_type.nbytes + p1_desc.block_type.nbytes)
                _tma_load(p1_desc, [n0, 4 * (blk * WPB + 16)], bar, p1_smem.index(slot))
            else:
                mbarrier.expect(bar, p0_desc.block_type.nbytes)
            _tma_load(p0_desc, [n0, blk * WPB], bar, p0_smem.index(slot))

    @gluon.jit
    def _load_acts(x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, start, XSTAGES: gl.constexpr,
                   STAGGER: gl.constexpr):
        """Per step: TMA the ``[BM, 128]`` activations of one block into a ring slot (two 64-column boxes)."""
        for i in range(k_hi - k_lo):
            slot = i % XSTAGES
            mbarrier.wait(x_empty.index(slot), ((i // XSTAGES) & 1) ^ 1)
            bar = x_ready.index(slot)
            mbarrier.expect(bar, 2 * x_desc.block_type.nbytes)
            pos = _block(i, k_lo, k_hi, start, STAGGER) * 128
            _tma_load(x_desc, [m0, pos], bar, x_smem.index(2 * slot))
            _tma_load(x_desc, [m0, pos + 64], bar, x_smem.index(2 * slot + 1))

    @gluon.jit
    def _decoder(p0_smem, p1_smem, w_smem, q_ready, q_empty, w_ready, w_empty, s_ptr, c_ptr,
                 N, n0, k_lo, k_hi, start, stride_sn,
                 BITS: gl.constexpr, BN: gl.constexpr, QSTAGES: gl.constexpr, WSTAGES: gl.constexpr,
                 DEC_WARPS: gl.constexpr, PART: gl.constexpr, PARTS: gl.constexpr, STAGGER: gl.constexpr):
        """Per step (steps ``PART``, ``PART + PARTS``, ...: the decoding partitions take turns): decode the slot's
        codes of one block into ``[BN, 128]`` 16-bit weights in K order."""
        # [rows, words, codes]: eight lanes over eight words of a row, a word's eight codes in one thread's registers
        L3: gl.constexpr = gl.BlockedLayout([1, 1, 8], [4, 8, 1], [DEC_WARPS, 1, 1], [2, 1, 0])
        LW: gl.constexpr = gl.SliceLayout(2, L3)
        LR: gl.constexpr = gl.SliceLayout(1, LW)
        LA: gl.constexpr = gl.SliceLayout(0, gl.SliceLayout(0, L3))
        dtype: gl.constexpr = w_smem.dtype
        rows = gl.minimum(n0 + gl.arange(0, BN, layout=LR), N - 1)  # clamped: every address is valid
        a = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=LA), 0), 0)  # [1, 1, 8]: code a of a word
        # code a is byte a // 2 of E (a even) or O (a odd), whose bit 4 is the code's fifth bit at Q5 (decode.py)
        shift = 8 * (a // 2)
        even = (a % 2) == 0
        c_lane = _lane_codebook(c_ptr, BITS, [BN, 16, 8], L3)
        norm_scale = 1.0 / 11.313708498984761  # 1 / sqrt(128)
        norm = gl.load(s_ptr + rows * stride_sn + _block(PART, k_lo, k_hi, start, STAGGER),
                       mask=k_lo + PART < k_hi, other=0.0)  # loaded a turn ahead
        for i in range(PART, k_hi - k_lo, PARTS):
            qs = i % QSTAGES
            ws = i % WSTAGES
            this_norm = (norm.to(gl.float32) * norm_scale).to(dtype)
            norm = gl.load(s_ptr + rows * stride_sn + _block(i + PARTS, k_lo, k_hi, start, STAGGER),
                           mask=i + PARTS < k_hi - k_lo, other=0.0)
            mbarrier.wait(q_ready.index(qs), (i // QSTAGES) & 1)
            w0 = p0_smem.index(qs).load(LW)  # [BN, 16] int32
            if BITS == 5:
                p1 = p1_smem.index(qs).load(LW).to(gl.int32) & 0xFF  # [BN, 16]: the fifth bits of word j's codes
                lo = (w0 & 0x0F0F0F0F) | (((p1 & 0x55) * 0x410410) & 0x10101010)  # bit 2j of p1 to bit 8j + 4
                hi = ((w0 >> 4) & 0x0F0F0F0F) | (((p1 & 0xAA) * 0x208208) & 0x10101010)  # bit 2j + 1 to bit 8j + 4
            else:
                lo = w0
                hi = w0 >> 4
            src = gl.where(even, gl.expand_dims(lo, 2), gl.expand_dims(hi, 2))  # [BN, 16, 8]
            code = (src.to(gl.uint32, bitcast=True) >> shift.to(gl.uint32)).to(gl.int32, bitcast=True)
            centroid = _shuffle(c_lane, code)
            # centroid and norm rounded to 16 bits and multiplied in pairs (HMUL2): 617 decoder instructions per
            # step instead of 677 (offline, Q5), at one more rounding per weight
            tile = centroid.to(dtype) * gl.expand_dims(gl.expand_dims(this_norm, 1), 2)
            mbarrier.wait(w_empty.index(ws), ((i // WSTAGES) & 1) ^ 1)
            w_smem.index(ws).store(gl.reshape(tile, [BN, 128]))
            fence_async_shared()
            mbarrier.arrive(w_ready.index(ws), count=1)
            # The word slot is handed back only now. Arrived right after the words were read (before the decode),
            # a TMA load could land in the slot before every decoding warp had its words: wrong results at Q4,
            # in some calls with four decoding warps and in every call with eight (H200, session 16, RESULTS.md
            # 16a). Here the fence and the barrier above stand between the reads and the arrive.
            mbarrier.arrive(q_empty.index(qs), count=1)

    @gluon.jit
    def _multiplier(w_smem, x_smem, w_ready, w_empty, x_ready, x_empty, k_lo, k_hi,
                    BN: gl.constexpr, BM: gl.constexpr, WSTAGES: gl.constexpr, XSTAGES: gl.constexpr,
                    num_warps: gl.constexpr):
        """Per step: ``acc += W_tile @ X_tile.T`` issued asynchronously; the slots of the step before freed once its
        MMAs retire."""
        # one warpgroup per BM // (num_warps // 4) activation rows: at BM = 256 two, each with 128 accumulators
        layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, num_warps // 4],
                                                         instr_shape=[16, BM // (num_warps // 4), 16])
        acc = gl.zeros([BN, BM], dtype=gl.float32, layout=layout)
        for i in range(k_hi - k_lo):
            ws = i % WSTAGES
            xs = i % XSTAGES
            mbarrier.wait(w_ready.index(ws), (i // WSTAGES) & 1)
            mbarrier.wait(x_ready.index(xs), (i // XSTAGES) & 1)
            w = w_smem.index(ws)
            acc = warpgroup_mma(w.slice(0, 64, dim=1), x_smem.index(2 * xs).permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma(w.slice(64, 64, dim=1), x_smem.index(2 * xs + 1).permute((1, 0)), acc,
                                is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=2, deps=(acc,))  # the step before has retired
            mbarrier.arrive(w_empty.index((i + WSTAGES - 1) % WSTAGES), count=1, pred=i > 0)
            mbarrier.arrive(x_empty.index((i + XSTAGES - 1) % XSTAGES), count=1, pred=i > 0)
        return (warpgroup_mma_wait(num_outstanding=0, deps=(acc,)),)  # warp_specialize returns a tuple

    @gluon.jit
    def _ws_kernel(
        # descriptors and pointers
        x_desc,  # TMA descriptor of the [M, K_PAD] rotated 16-bit activations, block [BM, 64]
        p0_desc,  # TMA descriptor of the [N, K_PAD * BITS // 32] int32 packed codes, block [BN, 16]
        p1_desc,  # TMA descriptor of the same bytes as [N, K_PAD * BITS // 8] int8, block [BN, 16] (Q5)
        s_ptr,  # [N, K_PAD // 128] float16 block scales
        c_ptr,  # [2**BITS] float32 standard codebook
        bias_ptr,  # [N] or unused
        out_ptr,  # [M, N]
        ws_ptr,  # [SPLIT_K, M, N] float32 partial sums (SPLIT)
        count_ptr,  # [>= tiles] int32 arrival counters, zero between calls (SPLIT)
        # dimensions
        M,
        N,
        K_PAD,
        # strides, in elements
        stride_sn,
        # meta-parameters
        BITS: gl.constexpr,
        BN: gl.constexpr,
        BM: gl.constexpr,
        QSTAGES: gl.constexpr,
        WSTAGES: gl.constexpr,
        XSTAGES: gl.constexpr,
        DEC_WARPS: gl.constexpr,
        DEC_PARTS: gl.constexpr,
        DEC_REGS: gl.constexpr,
        HAS_BIAS: gl.constexpr,
        SPLIT: gl.constexpr,
        STAGGER: gl.constexpr,
        num_warps: gl.constexpr,
    ):
        pid_n = gl.program_id(0)
        pid_m = gl.program_id(1)
        pid_k = gl.program_id(2)
        split_k = gl.num_programs(2)
        n0 = pid_n * BN
        m0 = pid_m * BM
        n_steps = K_PAD // 128
        per_split = gl.cdiv(n_steps, split_k)
        k_lo = gl.minimum(pid_k * per_split, n_steps)
        k_hi = gl.minimum(k_lo + per_split, n_steps)
        start = (7 * pid_n + 3 * pid_k) % gl.maximum(k_hi - k_lo, 1)  # (STAGGER) the block the program begins at
        dtype: gl.constexpr = x_desc.dtype
        w_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BN, 128], dtype)
        w_smem = gl.allocate_shared_memory(dtype, [WSTAGES, BN, 128], w_layout)
        x_smem = gl.allocate_shared_memory(dtype, [2 * XSTAGES, BM, 64], x_desc.layout)
        p0_smem = gl.allocate_shared_memory(gl.int32, [QSTAGES, BN, 16], p0_desc.layout)
        p1_smem = gl.allocate_shared_memory(gl.int8, [QSTAGES, BN, 16], p1_desc.layout)
        q_ready = gl.allocate_shared_memory(gl.int64, [QSTAGES, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [QSTAGES, 1], mbarrier.MBarrierLayout())
        w_ready = gl.allocate_shared_memory(gl.int64, [WSTAGES, 1], mbarrier.MBarrierLayout())
        w_empty = gl.allocate_shared_memory(gl.int64, [WSTAGES, 1], mbarrier.MBarrierLayout())
        x_ready = gl.allocate_shared_memory(gl.int64, [XSTAGES, 1], mbarrier.MBarrierLayout())
        x_empty = gl.allocate_shared_memory(gl.int64, [XSTAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(QSTAGES):
            mbarrier.init(q_ready.index(s), count=1)
            mbarrier.init(q_empty.index(s), count=1)
        for s in gl.static_range(WSTAGES):
            mbarrier.init(w_ready.index(s), count=1)
            mbarrier.init(w_empty.index(s), count=1)
        for s in gl.static_range(XSTAGES):
            mbarrier.init(x_ready.index(s), count=1)
            mbarrier.init(x_empty.index(s), count=1)
        fence_async_shared()
        # (Gluon takes the partitions as literal (function, arguments) pairs: no variables, hence the two calls)
        if DEC_PARTS == 1:
            results = gl.warp_specialize(
                [
                    (_multiplier, (w_smem, x_smem, w_ready, w_empty, x_ready, x_empty, k_lo, k_hi, BN, BM, WSTAGES,
                                   XSTAGES, num_warps)),
                    (_decoder, (p0_smem, p1_smem, w_smem, q_ready, q_empty, w_ready, w_empty, s_ptr, c_ptr, N, n0,
                                k_lo, k_hi, start, stride_sn, BITS, BN, QSTAGES, WSTAGES, DEC_WARPS, 0, 1,
                                STAGGER)),
                    (_load_words, (p0_desc, p1_desc, p0_smem, p1_smem, q_ready, q_empty, n0, k_lo, k_hi, start,
                                   BITS, QSTAGES, STAGGER)),
                    (_load_acts, (x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, start, XSTAGES, STAGGER)),
                ],
                [DEC_WARPS, 1, 1],
                [DEC_REGS, 24, 24],
            )
        else:  # two decoding partitions taking turns at the steps: each its own named CTA barrier and (QSTAGES
            # even) its own word slots; the weight slots they share are freed by the MMA warps in step order
            results = gl.warp_specialize(
                [
                    (_multiplier, (w_smem, x_smem, w_ready, w_empty, x_ready, x_empty, k_lo, k_hi, BN, BM, WSTAGES,
                                   XSTAGES, num_warps)),
                    (_decoder, (p0_smem, p1_smem, w_smem, q_ready, q_empty, w_ready, w_empty, s_ptr, c_ptr, N, n0,
                                k_lo, k_hi, start, stride_sn, BITS, BN, QSTAGES, WSTAGES, DEC_WARPS, 0, 2,
                                STAGGER)),
                    (_decoder, (p0_smem, p1_smem, w_smem, q_ready, q_empty, w_ready, w_empty, s_ptr, c_ptr, N, n0,
                                k_lo, k_hi, start, stride_sn, BITS, BN, QSTAGES, WSTAGES, DEC_WARPS, 1, 2,
                                STAGGER)),
                    (_load_words, (p0_desc, p1_desc, p0_smem, p1_smem, q_ready, q_empty, n0, k_lo, k_hi, start,
                                   BITS, QSTAGES, STAGGER)),
                    (_load_acts, (x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, start, XSTAGES, STAGGER)),
                ],
                [DEC_WARPS, DEC_WARPS, 1, 1],
                [DEC_REGS, DEC_REGS, 24, 24],
            )
        acc = results[0]
        # the epilogue: out[m, n] = acc[n - n0, m - m0], n contiguous in each thread's eight
        out_l: gl.constexpr = gl.BlockedLayout([8, 1], [16, 2], [1, num_warps], [0, 1])
        acc = gl.convert_layout(acc, out_l)
        n = n0 + gl.arange(0, BN, layout=gl.SliceLayout(1, out_l))
        m = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, out_l))
        tile = m.to(gl.int64)[None, :] * N + n[:, None]
        mask = (n[:, None] < N) & (m[None, :] < M)
        last = True
        if SPLIT:  # the last slice of this tile to finish sums the partials (kernels.common.sum_if_last)
            slice_elems = M.to(gl.int64) * N
            gl.store(ws_ptr + pid_k.to(gl.int64) * slice_elems + tile, acc, mask=mask)
            _cta_barrier()
            counter = count_ptr + pid_n * gl.num_programs(1) + pid_m
            last = gl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == split_k - 1
            if last:
                acc = _slices_sum(ws_ptr, tile, mask, slice_elems, split_k, [BN, BM], out_l)
                _reset(counter)
        if last:
            if HAS_BIAS:
                acc += gl.load(bias_ptr + n, mask=n < N, other=0.0).to(gl.float32)[:, None]
            gl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=mask)


def shared_bytes(config: dict) -> int:
    """Shared memory the rings of ``config`` take (the epilogue reuses it)."""
    BN = 128
    return (2 * config["XSTAGES"] * config["BM"] * 64 * 2 + config["WSTAGES"] * BN * 128 * 2
            + config["QSTAGES"] * BN * (64 + 16) + 1024)


def check_config(config: dict) -> None:
    """Refuse a config the kernel would hang on, could not fit or does not know: each ring a slot for the step being
    filled and one for the step being multiplied (with one slot, the decoders would wait for an MMA that waits for
    them)."""
    if config["BM"] not in (8, 16, 32, 64, 128, 256):  # (a tile's shape is a power of two)
        raise ValueError(f"ws_mma: BM must be a power of two in 8..256, got {config['BM']}")
    for ring in ("WSTAGES", "XSTAGES"):
        if config[ring] < 2:
            raise ValueError(f"ws_mma: {ring} must be at least 2 (one slot would deadlock), got {config[ring]}")
    mma_warps = 8 if config["BM"] == 256 else 4  # a warpgroup holds at most 128 x 128 float32 sums
    dec_warps = (4,) if mma_warps == 8 else (4, 8)  # (eight beside eight MMA warps: too few registers)
    if config["num_warps"] != mma_warps or config["DEC_WARPS"] not in dec_warps:
        raise ValueError(f"ws_mma: num_warps must be {mma_warps} at BM = {config['BM']} and DEC_WARPS 4 or 8 (4 at "
                         f"BM = 256: the registers), got {config['num_warps']} and {config['DEC_WARPS']}")
    parts = config.get("DEC_PARTS", 1)
    if parts not in (1, 2) or (parts == 2 and (config["DEC_WARPS"] != 4 or mma_warps != 4
                                               or config["QSTAGES"] % 2)):
        raise ValueError(f"ws_mma: DEC_PARTS must be 1, or 2 with four decoding warps each, BM <= 128 (the "
                         f"registers) and an even QSTAGES (each partition its own word slots), got {parts} with "
                         f"{config['DEC_WARPS']} warps, BM = {config['BM']}, QSTAGES = {config['QSTAGES']}")
    if config["QSTAGES"] < 1:
        raise ValueError(f"ws_mma: QSTAGES must be at least 1, got {config['QSTAGES']}")
    if not isinstance(config.get("STAGGER", False), bool):
        raise ValueError(f"ws_mma: STAGGER must be a bool, got {config['STAGGER']!r}")
    if shared_bytes(config) > 227 * 1024:
        raise ValueError(f"ws_mma: the rings need {shared_bytes(config)} bytes of shared memory, more than the "
                         f"227 KiB an SM has; fewer stages or a smaller BM")


def split_workspace(out: torch.Tensor, slices: int) -> torch.Tensor:
    """The float32 ``[slices, M, N]`` partials of one call with ``slices`` slices of K; with one, ``out`` (not read)."""
    if slices == 1:
        return out
    return torch.empty((slices, *out.shape), device=out.device, dtype=torch.float32)


def split_buffers(out: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`split_workspace` and the arrival counters of one call with ``grid[2]`` slices of K over
    ``grid[0] * grid[1]`` tiles; with one slice, ``out`` twice (not read)."""
    if grid[2] == 1:
        return out, out
    return split_workspace(out, grid[2]), arrival_counters(out.device, grid[0] * grid[1])


@functools.cache
def _layouts(BM: int, dtype: torch.dtype) -> tuple:
    """Shared-memory layouts of the TMA boxes: activations ``[BM, 64]`` (128-byte swizzle), words ``[128, 16]``
    int32 and plane-1 bytes ``[128, 16]`` (unswizzled: the decoders read them in their own layout)."""
    x = gl.NVMMASharedLayout.get_default_for([BM, 64], gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)
    p0 = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)
    p1 = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
    return x, p0, p1


def ws_mma(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    out_dtype: torch.dtype,
    config: dict,
) -> torch.Tensor:
    """Launch the kernel. Shapes are checked by the caller; the layer must satisfy :func:`supports`.

    Args:
        xr: (M, K_pad) rotated activations, bfloat16 or float16, in K order, contiguous and 16-byte aligned.
        qdata: (N, K_pad * bits / 8) uint8 packed codes, rows contiguous and 16-byte aligned.
        config: ``BM`` (activation rows per program, a power of two in 8..256), ``SPLIT_K``, ring
            depths ``QSTAGES`` (packed words), ``WSTAGES`` (decoded weights), ``XSTAGES`` (activations),
            ``DEC_WARPS`` / ``DEC_REGS`` (decoding warps, 4 or 8, and their registers per thread), ``DEC_PARTS``
            (1, or 2 decoding partitions of four warps taking turns at the steps; default 1), ``STAGGER`` (each
            program starts its slice at its own block, wrapping around; default False) and
            ``num_warps`` (the MMA warps: 4, or 8 at BM = 256); :func:`check_config` refuses others.

    Returns:
        (M, N) in ``out_dtype``.
    """
    scale, bias = unit_stride(scale), unit_stride(bias)  # indexed as packed rows / a packed vector
    M, k_pad = xr.shape
    plan = _plan(M, qdata.shape[0], k_pad, bits, xr.dtype, config_key(config), bias is not None, scale.stride(0))
    words = as_words(qdata)
    out = torch.empty((M, qdata.shape[0]), device=xr.device, dtype=out_dtype)
    ws, counters = split_buffers(out, plan.launch.grid)
    plan.launch(Tma(xr, (plan.launch.constexprs["BM"], 64), plan.x_layout), Tma(words, (128, 16), plan.p0_layout),
                Tma(words.view(torch.int8), (128, 16), plan.p1_layout), scale, standard_codebook(bits, xr.device),
                bias if bias is not None else out, out, ws, counters)
    return out


class _Plan(NamedTuple):
    """What a :func:`ws_mma` call signature resolves to once: the shared-memory layouts of its three TMA boxes
    (activations, the planes' words and bytes) and the launch."""

    x_layout: object
    p0_layout: object
    p1_layout: object
    launch: Launch


@plan_cache
def _plan(M: int, N: int, k_pad: int, bits: int, dtype: torch.dtype, config: tuple, has_bias: bool,
          scale_stride: int) -> _Plan:
    """The launch of :func:`ws_mma` for this call signature (``config``: :func:`.launch.config_key`), checked once."""
    config = config_of(config)
    check_config(config)
    BN, BM = 128, config["BM"]
    grid = (cdiv(N, BN), cdiv(M, BM), config["SPLIT_K"])
    launch = Launch(
        _ws_kernel, grid, (M, N, k_pad, scale_stride),
        dict(BITS=bits, BN=BN, BM=BM, QSTAGES=config["QSTAGES"], WSTAGES=config["WSTAGES"],
             XSTAGES=config["XSTAGES"], DEC_WARPS=config["DEC_WARPS"], DEC_PARTS=config.get("DEC_PARTS", 1),
             DEC_REGS=config["DEC_REGS"], HAS_BIAS=has_bias, SPLIT=grid[2] > 1, STAGGER=config.get("STAGGER", False),
             num_warps=config["num_warps"]),  # (num_warps: in the signature too)
    )
    return _Plan(*_layouts(BM, dtype), launch)
