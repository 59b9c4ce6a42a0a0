"""Warp-specialized tensor-core kernel with the weight as ``wgmma``'s register operand (Hopper, Gluon), M = 3..2048.

``y.T = Wr @ xr.T`` as in :mod:`.wsmma`, but no decoded weight tile passes
through shared memory: each of two warpgroups (four with ``PHASES=2``, below)
owns 64 of the program's 128 weight rows and decodes a step's codes straight
into ``wgmma``'s A-operand registers, then multiplies them with the activations
in shared memory (four warpgroups of 64 rows each, 256 rows a program, measured
3-100% slower: fewer programs, or split K past what pays). Beside them, two one-warp TMA loaders: the block's plane-0
words and plane-1 bytes (:func:`.wsmma._load_words`) and its activations
(:func:`_load_acts`). :func:`ws_rs_ref` is its plain-torch equivalent.

Layout. In the A operand's register layout (``DotOperandLayout``, k_width 2,
the layout of ``mma.m16n8k16``'s A fragments) thread ``(g, t)`` of a warp
holds columns ``2t, 2t + 1, 2t + 8, 2t + 9`` of every 16-column k-tile. A
``[64, 16]`` tensor of plane-0 words in that layout therefore gives each
thread four words per row, and code ``a`` of those words (``a = 0..7``) is
its fragment of k-tile ``a`` once K is reordered so that code ``a`` of
word ``w`` comes ``16 a + w`` into the step. So a step is eight ``wgmma`` of
K = 16, and the activations come in one of two orders (:func:`activation_span`,
by the config's ``XBOX``):

- ``XBOX=16``: :func:`.wgmma.permute_activations`' order
  (``xp[:, a * K/8 + w] = xr[:, 8 w + a]``, the FWHT kernel's ``per_word=8``),
  a step's activations eight ``[BM, 16]`` TMA boxes (32-byte rows), one per
  k-tile, ``a * K/8 + 16 * block``;
- ``XBOX=64``: the same order within each block of 128
  (``permute_activations(..., span=128)``, ``fwht(..., per_word=8, span=128)``),
  a step's activations two ``[BM, 64]`` boxes (128-byte
  rows and swizzle), each sliced into four k-tiles. Measured on an H200
  (``benchmarks/RESULTS.md`` 20b): less time at BM = 16 on Q5 (1.4-5.0%),
  more at BM = 32 and 64 on Q5 (0.4-6.1%), less there on Q4 (0.5-3.2%);
  the tuner times both.

Decoding per code: a shift, one warp shuffle (the codebook held one entry per
lane) and half a pack to 16 bits. A step's eight MMAs start from zero and the
block's norm multiplies their float32 sum into the accumulator (two rows a thread, so
``BM / 2`` FMAs a step instead of a 16-bit multiply per two weights: 11% fewer
loop instructions at BM = 16, 5% at 64, and the weight rounded once, not
three times; measured on an H200: 0.6-4.4% less time on 8 of 12 cases, up
to 0.8% more on the other four, ``benchmarks/NOTES.md`` session 19). At
Q5 the fifth bits are spread into the nibbles' bytes by a multiply and
merged by one ``LOP3`` select per word and parity.

Past M = 64 ``BM`` is 128 or 256 (``m64n256`` MMAs). At BM = 256 two float32
accumulators would not fit beside the decode, so there the norm multiplies the
16-bit weights (``NORM_ACC=False``: the weight rounded three times, as
:mod:`.wsmma` does); at BM = 128 both fit and took the same time within 2%
once the epilogue below was in (H200, ``benchmarks/RESULTS.md`` 21a), so the
norms stay on the sums there. From BM = 128 the sums are stored from the MMA's
register layout (converting BM = 256's 128 sums a thread spilled). The weight
is decoded once per ``BM`` activation rows, and each program reads ``BM`` x K
activations from the L2 for its 128 weight rows.

A consumer keeps the eight A tiles alive until its step's MMAs have retired
(``wgmma`` reads registers while it runs), so its MMAs and its next decode do
not overlap; the other warpgroup's do (double-buffering the A tiles across
steps made ptxas serialize every ``wgmma``, for registers). Measured (H200,
``benchmarks/NOTES.md`` session 18): 11-25% less time than :mod:`.wsmma` at
M = 16..64 on the Llama shapes and 4096 x 4096, where that kernel's decoders
write and its MMAs read every weight tile through shared memory.

``PHASES=2`` (up to BM = 32): two warpgroups for each 64-row half, one taking
the slice's even blocks and one its odd blocks, each with its own accumulator;
at the end the odd blocks' warpgroup hands its sums over in shared memory and
the even blocks' one stores both. Same loaders and programs, 16 consumer warps
instead of 8 (four a scheduler, at most 120 registers a thread instead of 168;
``REGS`` sets three of the four, the default one gets what is left). The rings
must be of even depth, so that every slot is used by one pair of warpgroups
only: a slot used by both pairs in turn could let a wait pass on its previous
phase. ``ncu`` at BM = 16 had the two consumer warpgroups spending 68-76% of
their stall samples on the decode's own instructions (issuing on 25-29%,
waiting on fixed-latency dependences on 21-24%) and only 6-15% waiting for a
word slot; with twice the warps to interleave those chains and four
activation slots, 6.2-10.8% less time at M = 4..16 on 14336 x 4096 and
4096 x 14336, Q4 and Q5, and from 1.9% less to 0.7% more on 4096 x 4096
(H200, ``benchmarks/RESULTS.md`` 30a): first among the candidates at
BM = 16 (the tuner times them all).

Split K: each program stores its float32 sums as partials and a kernel of
their own over every SM (:func:`.common.reduce_split_k`, launched right
behind this one, with PDL when this one is) sums them. Measured on an H200
against the last program of each tile summing it (``benchmarks/RESULTS.md``
23 and 31b):
from BM = 128, where 1 / SPLIT_K of the programs (those finishing last) read
the whole workspace, 0.70 -> 0.77x bf16 at M = 256 on 4096 x 14336; at
BM = 64 6-28% less time on 4096 x 14336, 4096 x 4096 and 1024 x 4096; at
BM = 16 1-8% less at M = 16 and from 5.0% less to 1.3% more at M = 4. The
last program's chain (a fence, an atomic and the loads, one round trip to the
L2 after another) took 1.5-2.9 us at M = 4..16 and 3.8-5.9 at 64 there.

Gluon has no interpreter, so this kernel runs only on a GPU (sm_90); it serves
the layers :func:`.wsmma.supports` accepts, on the devices
:func:`.wsmma.runs_on` accepts.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton.language as tl

from ..codebook import codebook as standard_codebook
from .common import as_words, launch_options, pdl, reduce_split_k, unit_stride
from .launch import Launch, Tma, cdiv, config_key, config_of, plan_cache
from .wsmma import gluon, split_workspace, ws_mma_ref

__all__ = ["activation_span", "check_config", "launch_plan", "plan_for", "shared_bytes", "ws_rs", "ws_rs_ref"]

if gluon is not None:
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared,
        mbarrier,
        warpgroup_mma,
        warpgroup_mma_wait,
    )
    from .wsmma import _cta_barrier, _lane_codebook, _layouts, _load_words, _shuffle, _tma_load

    @gluon.jit
    def _load_acts(x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, K_PAD, XSTAGES: gl.constexpr,
                   XBOX: gl.constexpr):
        """Per step: TMA the ``[BM, 128]`` activations of one block into a ring slot, as ``128 / XBOX`` boxes: the
        ``[BM, 16]`` of each code index ``a`` (``XBOX=16``, ``a * K/8 + 16 * block``) or the block's two halves
        (``XBOX=64``, block-local order)."""
        for i in range(k_hi - k_lo):
            slot = i % XSTAGES
            mbarrier.wait(x_empty.index(slot), ((i // XSTAGES) & 1) ^ 1)
            bar = x_ready.index(slot)
            mbarrier.expect(bar, (128 // XBOX) * x_desc.block_type.nbytes)
            for box in gl.static_range(128 // XBOX):
                if XBOX == 16:
                    pos = box * (K_PAD // 8) + (k_lo + i) * 16
                else:
                    pos = (k_lo + i) * 128 + box * XBOX
                _tma_load(x_desc, [m0, pos], bar, x_smem.index((128 // XBOX) * slot + box))

    @gluon.jit
    def _wait_for_inputs(PDL: gl.constexpr):
        """:func:`.common.wait_for_inputs` in Gluon: with PDL, wait until the kernel before this one has finished
        and its writes are visible."""
        if PDL:
            tl.extra.cuda.gdc_wait()

    @gluon.jit
    def _x_tile(x_smem, slot, a: gl.constexpr, XBOX: gl.constexpr):
        """k-tile ``a`` of a slot's activations, ``[16, BM]`` as ``wgmma``'s B operand: box ``a`` (``XBOX=16``) or
        columns ``16 (a % 4) ..`` of box ``a // 4`` (``XBOX=64``)."""
        tile = x_smem.index((128 // XBOX) * slot + 16 * a // XBOX)
        if XBOX != 16:
            tile = tile.slice(16 * a % XBOX, 16, dim=1)
        return tile.permute((1, 0))

    @gluon.jit
    def _select(nibbles, fifth):
        """Bits 0..3 of each byte from ``nibbles``, bits 4..7 from ``fifth`` (one LOP3)."""
        return gl.inline_asm_elementwise("lop3.b32 $0, $1, 0x0F0F0F0F, $2, 0xE2;", "=r,r,r", [nibbles, fifth],
                                         dtype=gl.int32, is_pure=True, pack=1)

    @gluon.jit
    def _a_tile(c_lane, src, dtype: gl.constexpr):
        """k-tile operand: the centroids of the codes in bits 0..4 of ``src`` (a shuffle each), in 16 bits."""
        return _shuffle(c_lane, src.to(gl.int32, bitcast=True)).to(dtype)

    @gluon.jit
    def _consumer(p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr, c_ptr,
                  bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k,
                  BITS: gl.constexpr, BM: gl.constexpr, QSTAGES: gl.constexpr, XSTAGES: gl.constexpr,
                  XBOX: gl.constexpr, NORM_ACC: gl.constexpr, HAS_BIAS: gl.constexpr, SPLIT: gl.constexpr,
                  PART: gl.constexpr, PHASE: gl.constexpr, PHASES: gl.constexpr):
        """One warpgroup: rows ``n0 + 64 PART ..`` of the blocks ``PHASE, PHASE + PHASES, ..`` of the slice, decoded
        into registers and multiplied step by step; the sums stored to the output (or, split K, to the partials) by
        the warpgroup of phase 0, after adding the other phase's (handed over in ``xch_smem``)."""
        acc_l: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BM, 16])
        a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=2)
        dtype: gl.constexpr = x_smem.dtype
        acc = gl.zeros([64, BM], dtype=gl.float32, layout=acc_l)
        # a thread's rows: in the accumulator's layout (norms on the sums) or the A operand's (on the weights)
        norm_l: gl.constexpr = gl.SliceLayout(1, acc_l) if NORM_ACC else gl.SliceLayout(1, a_l)
        rows = gl.minimum(n0 + 64 * PART + gl.arange(0, 64, layout=norm_l), N - 1)  # clamped
        c_lane = _lane_codebook(c_ptr, BITS, [64, 16], a_l)
        norm_scale = 1.0 / 11.313708498984761  # 1 / sqrt(128)
        norm = gl.load(s_ptr + rows * stride_sn + k_lo + PHASE, mask=k_lo + PHASE < k_hi, other=0.0)  # a step ahead
        for t in range(gl.cdiv(k_hi - k_lo - PHASE, PHASES)):
            i = PHASES * t + PHASE
            qs = i % QSTAGES
            xs = i % XSTAGES
            if NORM_ACC:
                this_norm = gl.expand_dims(norm.to(gl.float32) * norm_scale, 1)
            else:  # rounded to 16 bits, as the weights it multiplies
                this_norm = gl.expand_dims((norm.to(gl.float32) * norm_scale).to(dtype), 1)
            norm = gl.load(s_ptr + rows * stride_sn + k_lo + i + PHASES, mask=k_lo + i + PHASES < k_hi, other=0.0)
            mbarrier.wait(q_ready.index(qs), (i // QSTAGES) & 1)
            w0 = p0_smem.index(qs).slice(64 * PART, 64, dim=0).load(a_l)  # [64, 16] int32
            if BITS == 5:
                p1 = p1_smem.index(qs).slice(64 * PART, 64, dim=0).load(a_l).to(gl.int32)  # word j's fifth bits
            _cta_barrier()  # every warp of the group has its words before the slot is handed back
            mbarrier.arrive(q_empty.index(qs), count=1)
            if BITS == 5:  # even codes' fifth bits to bit 4 of lo's bytes, odd codes' to hi's (see decode.py)
                lo = _select(w0, (p1 & 0x55) * 0x410410)
                hi = _select(w0 >> 4, (p1 & 0xAA) * 0x208208)
            else:
                lo = w0
                hi = w0 >> 4
            lo = lo.to(gl.uint32, bitcast=True)
            hi = hi.to(gl.uint32, bitcast=True)
            a0 = _a_tile(c_lane, lo, dtype)
            a1 = _a_tile(c_lane, hi, dtype)
            a2 = _a_tile(c_lane, lo >> 8, dtype)
            a3 = _a_tile(c_lane, hi >> 8, dtype)
            a4 = _a_tile(c_lane, lo >> 16, dtype)
            a5 = _a_tile(c_lane, hi >> 16, dtype)
            a6 = _a_tile(c_lane, lo >> 24, dtype)
            a7 = _a_tile(c_lane, hi >> 24, dtype)
            if not NORM_ACC:
                a0 = a0 * this_norm
                a1 = a1 * this_norm
                a2 = a2 * this_norm
                a3 = a3 * this_norm
                a4 = a4 * this_norm
                a5 = a5 * this_norm
                a6 = a6 * this_norm
                a7 = a7 * this_norm
            mbarrier.wait(x_ready.index(xs), (i // XSTAGES) & 1)
            step = warpgroup_mma(a0, _x_tile(x_smem, xs, 0, XBOX), acc, use_acc=not NORM_ACC, is_async=True)
            step = warpgroup_mma(a1, _x_tile(x_smem, xs, 1, XBOX), step, is_async=True)
            step = warpgroup_mma(a2, _x_tile(x_smem, xs, 2, XBOX), step, is_async=True)
            step = warpgroup_mma(a3, _x_tile(x_smem, xs, 3, XBOX), step, is_async=True)
            step = warpgroup_mma(a4, _x_tile(x_smem, xs, 4, XBOX), step, is_async=True)
            step = warpgroup_mma(a5, _x_tile(x_smem, xs, 5, XBOX), step, is_async=True)
            step = warpgroup_mma(a6, _x_tile(x_smem, xs, 6, XBOX), step, is_async=True)
            step = warpgroup_mma(a7, _x_tile(x_smem, xs, 7, XBOX), step, is_async=True)
            # wgmma reads the A registers while it runs: they stay alive (deps) until the step's MMAs retire
            step, a0, a1, a2, a3, a4, a5, a6, a7 = warpgroup_mma_wait(
                num_outstanding=0, deps=(step, a0, a1, a2, a3, a4, a5, a6, a7))
            mbarrier.arrive(x_empty.index(xs), count=1)
            if NORM_ACC:
                acc += step * this_norm  # the block's norm, in float32
            else:
                acc = step
        if PHASES == 2:  # the odd blocks' warpgroup hands its sums to the even blocks' one, which stores both
            if PHASE == 1:
                xch_smem.index(PART).store(acc)
                _cta_barrier()  # every warp's sums are in before the hand-over
                mbarrier.arrive(xch_bar.index(PART), count=1)
            else:
                mbarrier.wait(xch_bar.index(PART), 0)
                acc += xch_smem.index(PART).load(acc_l)
        if PHASE == 0:
            # Up to BM = 64, n contiguous in a thread's eight (the ws kernel's layout for 128 rows: on these 64 two
            # lanes hold each sum and store it twice, the same value). From BM = 128 the sums are stored in the MMA's
            # layout (eight lanes' 4-byte sums of one activation row fill a 32-byte sector): converting BM = 256's 128
            # sums a thread spilled registers.
            out_l: gl.constexpr = acc_l if BM >= 128 else gl.BlockedLayout([8, 1], [16, 2], [1, 4], [0, 1])
            acc = gl.convert_layout(acc, out_l)
            n = n0 + 64 * PART + gl.arange(0, 64, layout=gl.SliceLayout(1, out_l))
            m = m0 + gl.arange(0, BM, layout=gl.SliceLayout(0, out_l))
            tile = m.to(gl.int64)[None, :] * N + n[:, None]
            mask = (n[:, None] < N) & (m[None, :] < M)
            if SPLIT:
                gl.store(ws_ptr + pid_k.to(gl.int64) * M * N + tile, acc, mask=mask)
            else:
                if HAS_BIAS:
                    acc += gl.load(bias_ptr + n, mask=n < N, other=0.0).to(gl.float32)[:, None]
                gl.store(out_ptr + tile, acc.to(out_ptr.dtype.element_ty), mask=mask)

    @gluon.jit(do_not_specialize=["M"])  # (M = 1 would be a constant, and `M.to` below no tensor op)
    def _rs_kernel(
        # descriptors and pointers
        x_desc,  # TMA descriptor of the [M, K_PAD] rotated 16-bit activations (activation_span's order), [BM, XBOX]
        p0_desc,  # TMA descriptor of the [N, K_PAD * BITS // 32] int32 packed codes, block [BN, 16]
        p1_desc,  # TMA descriptor of the same bytes as [N, K_PAD * BITS // 8] int8, block [BN, 16] (Q5)
        s_ptr,  # [N, K_PAD // 128] float16 block scales
        c_ptr,  # [2**BITS] float32 standard codebook
        bias_ptr,  # [N] or unused
        out_ptr,  # [M, N]
        ws_ptr,  # [SPLIT_K, M, N] float32 partial sums (SPLIT), summed by common.reduce_split_k after the kernel
        # dimensions
        M,
        N,
        K_PAD,
        # strides, in elements
        stride_sn,
        # meta-parameters
        BITS: gl.constexpr,
        BM: gl.constexpr,
        QSTAGES: gl.constexpr,
        XSTAGES: gl.constexpr,
        XBOX: gl.constexpr,
        NORM_ACC: gl.constexpr,
        REGS: gl.constexpr,
        HAS_BIAS: gl.constexpr,
        SPLIT: gl.constexpr,
        PDL: gl.constexpr,
        PHASES: gl.constexpr,
        num_warps: gl.constexpr,  # (the default partition's; 4)
    ):
        BN: gl.constexpr = 128  # two consumer warpgroups of 64 rows
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
        x_smem = gl.allocate_shared_memory(x_desc.dtype, [(128 // XBOX) * XSTAGES, BM, XBOX], x_desc.layout)
        p0_smem = gl.allocate_shared_memory(gl.int32, [QSTAGES, BN, 16], p0_desc.layout)
        p1_smem = gl.allocate_shared_memory(gl.int8, [QSTAGES, BN, 16], p1_desc.layout)
        q_ready = gl.allocate_shared_memory(gl.int64, [QSTAGES, 1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [QSTAGES, 1], mbarrier.MBarrierLayout())
        x_ready = gl.allocate_shared_memory(gl.int64, [XSTAGES, 1], mbarrier.MBarrierLayout())
        x_empty = gl.allocate_shared_memory(gl.int64, [XSTAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(QSTAGES):
            mbarrier.init(q_ready.index(s), count=1)
            mbarrier.init(q_empty.index(s), count=2)  # each warpgroup hands the slot back
        for s in gl.static_range(XSTAGES):
            mbarrier.init(x_ready.index(s), count=1)
            mbarrier.init(x_empty.index(s), count=2)
        if PHASES == 2:  # the odd blocks' sums of each half, handed to the even blocks' warpgroup
            xch_smem = gl.allocate_shared_memory(gl.float32, [2, 64, BM], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
            xch_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
            for s in gl.static_range(2):
                mbarrier.init(xch_bar.index(s), count=1)
        else:  # (not used)
            xch_smem = x_smem
            xch_bar = x_ready
        fence_async_shared()
        _wait_for_inputs(PDL)  # (launched early with PDL: only the rings' set-up above overlaps the kernel before)
        # (Gluon takes each partition's arguments as a literal tuple: one built apart loses its constants)
        if PHASES == 1:
            gl.warp_specialize([
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 0, 0, 1)),
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 1, 0, 1)),
                (_load_words, (p0_desc, p1_desc, p0_smem, p1_smem, q_ready, q_empty, n0, k_lo, k_hi, 0, BITS,
                               QSTAGES, False)),
                (_load_acts, (x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, K_PAD, XSTAGES, XBOX)),
            ], [4, 1, 1], [REGS, 24, 24])
        else:  # four consumer warpgroups: (PART, PHASE) = (0, 0) the default partition, then (1, 0), (0, 1), (1, 1)
            gl.warp_specialize([
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 0, 0, 2)),
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 1, 0, 2)),
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 0, 1, 2)),
                (_consumer, (p0_smem, p1_smem, x_smem, q_ready, q_empty, x_ready, x_empty, xch_smem, xch_bar, s_ptr,
                             c_ptr, bias_ptr, out_ptr, ws_ptr, M, N, n0, m0, k_lo, k_hi, stride_sn, pid_k, BITS, BM,
                             QSTAGES, XSTAGES, XBOX, NORM_ACC, HAS_BIAS, SPLIT, 1, 1, 2)),
                (_load_words, (p0_desc, p1_desc, p0_smem, p1_smem, q_ready, q_empty, n0, k_lo, k_hi, 0, BITS,
                               QSTAGES, False)),
                (_load_acts, (x_desc, x_smem, x_ready, x_empty, m0, k_lo, k_hi, K_PAD, XSTAGES, XBOX)),
            ], [4, 4, 4, 1, 1], [REGS, REGS, REGS, 24, 24])


def shared_bytes(config: dict) -> int:
    """Shared memory ``config`` takes: the rings, and (they are still allocated then) each consumer's scratch for
    its epilogue's layout conversion up to BM = 64, ``64 x min(BM, 32)`` float32 (Triton 3.6 and 3.9 convert larger
    tiles in pieces of that size; from BM = 128 nothing is converted), with ``PHASES=2`` the two ``[64, BM]`` float32
    sums handed over, and the barriers."""
    scratch = 2 * 64 * min(config["BM"], 32) * 4 if config["BM"] < 128 else 0
    handover = 2 * 64 * config["BM"] * 4 if config.get("PHASES", 1) == 2 else 0
    return (config["QSTAGES"] * 128 * (64 + 16) + config["XSTAGES"] * config["BM"] * 128 * 2 + scratch + handover
            + 1024)


def check_config(config: dict) -> None:
    """Refuse a config the kernel could not compile, fit or use well."""
    if config["BM"] not in (8, 16, 32, 64, 128, 256):
        raise ValueError(f"ws_rs: BM must be a power of two from 8 to 256 (wgmma's N), got {config['BM']}")
    norm_acc = config.get("NORM_ACC", True)
    if not isinstance(norm_acc, bool):
        raise ValueError(f"ws_rs: NORM_ACC must be a bool, got {norm_acc!r}")
    if norm_acc and config["BM"] > 128:
        raise ValueError(f"ws_rs: NORM_ACC=True (two [64, BM] float32 accumulators, BM registers a thread) needs "
                         f"BM <= 128, got BM = {config['BM']}; NORM_ACC=False at BM = 256")
    if config["SPLIT_K"] < 1:
        raise ValueError(f"ws_rs: SPLIT_K must be at least 1, got {config['SPLIT_K']}")
    if config["XBOX"] not in (16, 64):
        raise ValueError(f"ws_rs: XBOX (activation box width) must be 16 or 64, got {config['XBOX']}")
    for ring in ("QSTAGES", "XSTAGES"):
        if config[ring] < 2:  # (one slot would run, each step's loads waiting for the step before's work)
            raise ValueError(f"ws_rs: {ring} must be at least 2, so that a step's loads overlap another's work, "
                             f"got {config[ring]}")
    if not (24 <= config["REGS"] <= 256 and config["REGS"] % 8 == 0):
        raise ValueError(f"ws_rs: REGS must be a multiple of 8 in 24..256 (setmaxnreg), got {config['REGS']}")
    phases = config.get("PHASES", 1)
    if phases not in (1, 2):
        raise ValueError(f"ws_rs: PHASES (consumer warpgroups taking turns at a 64-row half's blocks) must be 1 or "
                         f"2, got {phases!r}")
    if phases == 2 and (config["BM"] > 32 or config["REGS"] > 120):
        raise ValueError(f"ws_rs: PHASES=2 runs 16 consumer warps; REGS sets three of their four warpgroups and the "
                         f"default one gets what is left, so it needs BM <= 32 and REGS <= 120 (at BM = 32 Triton 3.9 "
                         f"spills a register); got BM = {config['BM']}, REGS = {config['REGS']}")
    if phases == 2 and (config["QSTAGES"] % 2 or config["XSTAGES"] % 2):
        raise ValueError(f"ws_rs: PHASES=2 needs rings of even depth, so that each pair of warpgroups has slots of its "
                         f"own (with an odd ring a wait could pass on a slot's previous phase); got QSTAGES = "
                         f"{config['QSTAGES']}, XSTAGES = {config['XSTAGES']}")
    if shared_bytes(config) > 227 * 1024:
        raise ValueError(f"ws_rs: the rings need {shared_bytes(config)} bytes of shared memory, more than the "
                         f"227 KiB an SM has; fewer stages or a smaller BM")


def activation_span(config: dict) -> int | None:
    """The activation order a config reads: :func:`.wgmma.permute_activations`' ``span`` (None: the whole row)."""
    return 128 if config["XBOX"] == 64 else None


def ws_rs_ref(xp: torch.Tensor, qdata: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
              bits: int, span: int | None = None, norm_on_sums: bool = True) -> torch.Tensor:
    """Plain-torch equivalent of :func:`ws_rs`, in float64 (the test oracle): :func:`.wsmma.ws_mma_ref` on the
    activations taken back to K order.

    Args:
        span: the order of ``xp``, as :func:`.wgmma.permute_activations` takes it
            (``xp[:, s0 + a * span/8 + w] = xr[:, s0 + 8 * w + a]``; None: the whole row), the config's
            :func:`activation_span`.
        norm_on_sums: the config's ``NORM_ACC``: each block's norm multiplies the block's float32 sums (True) or
            the 16-bit weights (False).
    """
    M, k_pad = xp.shape
    span = span or k_pad
    xr = xp.reshape(M, k_pad // span, 8, span // 8).transpose(2, 3).reshape(xp.shape)
    return ws_mma_ref(xr, qdata, scale, bias, bits, norm_on_sums=norm_on_sums)


@functools.cache
def _x_layout(BM: int, XBOX: int, dtype: torch.dtype):
    """Shared-memory layout of an activation box ``[BM, XBOX]`` (32- or 128-byte swizzle, as ``wgmma`` reads it)."""
    return gl.NVMMASharedLayout.get_default_for([BM, XBOX], gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


BN = 128  # weight rows a program: wgmma's M, two warpgroups of 64


class _Plan(NamedTuple):
    """What a :func:`ws_rs` call signature resolves to once."""

    out_shape: tuple[int, int]
    split_k: int
    dependent: bool  # programmatic dependent launch (the kernel's and the split-K sum's)
    x_box: tuple[int, int]  # the activation descriptor's block (BM, XBOX)
    x_layout: object  # shared-memory layouts of the activation box and of the weight's two planes' boxes
    p0_layout: object
    p1_layout: object
    launch: Launch


@plan_cache
def _plan(M: int, N: int, k_pad: int, bits: int, dtype: torch.dtype, config: tuple, has_bias: bool, dependent: bool,
          scale_stride: int) -> _Plan:
    """The launch of :func:`ws_rs` for this call signature (``config``: :func:`.launch.config_key`), checked once."""
    config = config_of(config)
    check_config(config)
    BM = config["BM"]
    _, p0_l, p1_l = _layouts(64, dtype)
    grid = (cdiv(N, BN), cdiv(M, BM), config["SPLIT_K"])
    launch = Launch(
        _rs_kernel, grid, (M, N, k_pad, scale_stride),
        dict(BITS=bits, BM=BM, QSTAGES=config["QSTAGES"], XSTAGES=config["XSTAGES"], XBOX=config["XBOX"],
             NORM_ACC=config.get("NORM_ACC", True), REGS=config["REGS"], HAS_BIAS=has_bias, SPLIT=grid[2] > 1,
             PDL=dependent, PHASES=config.get("PHASES", 1), num_warps=4),  # (num_warps: in the signature too)
        launch_options(dependent),
    )
    return _Plan((M, N), grid[2], dependent, (BM, config["XBOX"]), _x_layout(BM, config["XBOX"], dtype), p0_l, p1_l,
                 launch)


def ws_rs(
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
    """Launch the kernel. Shapes are checked by the caller; the layer must satisfy :func:`.wsmma.supports`.

    Args:
        xp: (M, K_pad) rotated activations, bfloat16 or float16, in the config's order
            (:func:`.wgmma.permute_activations` with ``activation_span(config)``), contiguous and 16-byte aligned.
        qdata: (N, K_pad * bits / 8) uint8 packed codes, rows contiguous and 16-byte aligned.
        config: ``BM`` (activation rows per program: 8 to 256), ``SPLIT_K``, ring depths
            ``QSTAGES`` (packed words) and ``XSTAGES`` (activations), ``REGS`` (registers per thread of the second
            consumer warpgroup, and with ``PHASES=2`` of the third and fourth; the first takes what the others and
            the loaders leave), ``XBOX`` (activation box width, 16 or 64; it sets
            the order of ``xp``, :func:`activation_span`), ``NORM_ACC`` (default True: the block norms on the
            float32 sums; False: on the 16-bit weights, one accumulator instead of two, as BM = 256 needs),
            ``PHASES`` (default 1; 2: two warpgroups a 64-row half, taking turns at the blocks, up to BM = 32, rings
            of even depth);
            :func:`check_config` refuses others.
        dependent: launch this kernel, and the split-K sum after it, with programmatic dependent launch by
            default (each waiting for the kernel before it in ``griddepcontrol.wait``); ``HLWQ_PDL`` overrides it
            and it is off but on sm_90 and newer (:func:`.common.pdl`).

    Returns:
        (M, N) in ``out_dtype``.
    """
    scale, bias = unit_stride(scale), unit_stride(bias)  # indexed as packed rows / a packed vector
    words = as_words(qdata)
    plan = plan_for(xp.shape, xp.dtype, xp.device, words, scale, bias, bits, block_size, config, dependent)
    return launch_plan(plan, xp, words, scale, bias, standard_codebook(bits, xp.device), out_dtype)


def plan_for(x_shape: tuple[int, int], x_dtype: torch.dtype, device: torch.device, words: torch.Tensor,
             scale: torch.Tensor, bias: torch.Tensor | None, bits: int, block_size: int, config: dict,
             dependent: bool = False) -> _Plan:
    """The plan of a :func:`ws_rs` call on activations of ``x_shape`` and ``x_dtype`` (``words``: the codes viewed as
    int32; ``scale`` and ``bias`` with unit stride; the rest as it takes them), which :func:`launch_plan` runs. Made
    before the activations are (by ``kernels.linear``, resolving a call), it takes their shape and dtype;
    ``block_size`` (always 128 here) only gives the three tensor-core kernels' ``plan_for`` one signature."""
    M, k_pad = x_shape
    return _plan(M, words.shape[0], k_pad, bits, x_dtype, config_key(config), bias is not None,
                 pdl(device, default=dependent), scale.stride(0))


def launch_plan(plan: _Plan, xp: torch.Tensor, words: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                table: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Allocate the output (and split K's partials) and launch ``plan`` (:func:`plan_for`), then split K's sum:
    what every call does (``words``: the codes viewed as int32; ``scale`` and ``bias`` with unit stride; ``table``:
    the standard codebook)."""
    out = torch.empty(plan.out_shape, device=xp.device, dtype=out_dtype)
    ws = split_workspace(out, plan.split_k)
    plan.launch(Tma(xp, plan.x_box, plan.x_layout), Tma(words, (BN, 16), plan.p0_layout),
                Tma(words.view(torch.int8), (BN, 16), plan.p1_layout), scale, table,
                bias if bias is not None else out, out, ws)
    if plan.split_k > 1:  # (the kernel stored the partials only)
        reduce_split_k(ws, bias, out, dependent=plan.dependent)
    return out
