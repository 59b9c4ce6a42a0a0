"""Pieces shared by the Triton kernels: plane geometry, the codebook, the split-K arrival protocol and the split-K
sum kernel, and programmatic dependent launch."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..codebook import codebook as standard_codebook
from ..format import plane_widths
from .launch import Launch, cdiv, plan_cache

__all__ = [
    "COUNTER_BUFFER",
    "SplitPlan",
    "arrival_counters",
    "arrive",
    "capability",
    "counter_buffer",
    "kernel_codebook",
    "launch_options",
    "launch_split_plan",
    "pdl",
    "pdl_requested",
    "planes",
    "prefetch_l2",
    "reduce_split_k",
    "release_dependents",
    "reset_counter",
    "slices_sum",
    "sm_count",
    "sum_if_last",
    "sum_partials",
    "unit_stride",
    "wait_for_inputs",
]


@functools.cache
def planes(bits: int) -> dict[str, int]:
    """Kernel constexprs ``W0, O0, W1, O1, W2, O2``: width and bit offset of up to three planes (0 if absent).

    Cached (it is asked on every launch): do not modify the returned dict.
    """
    out = {f"W{p}": 0 for p in range(3)} | {f"O{p}": 0 for p in range(3)}
    offset = 0
    for p, w in enumerate(plane_widths(bits)):
        out[f"W{p}"], out[f"O{p}"] = w, offset
        offset += w
    return out


def kernel_codebook(bits: int, codebook: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The (2**bits,) float32 codebook the kernels look codes up in (cached for the standard one), unit stride."""
    return standard_codebook(bits, device) if codebook is None else codebook.contiguous()


def as_words(qdata: torch.Tensor) -> torch.Tensor:
    """The packed codes as the 32-bit words every kernel reads, or a ValueError that says what layout they need
    (torch's own view error names neither the codes nor the fix, and memory from outside torch's allocator may start
    at any byte, which the view does not check and a GPU's word loads fault on)."""
    try:
        view = qdata.view(torch.int32)
    except RuntimeError as error:
        raise ValueError(_unreadable(qdata)) from error
    if qdata.data_ptr() & 3:
        raise ValueError(_unreadable(qdata))
    return view


def _unreadable(qdata: torch.Tensor) -> str:
    return ("the kernels read packed codes (qdata) as 32-bit words: expected uint8 codes starting at a multiple of "
            "4 bytes, with unit stride along their last dim and a row stride and storage offset that are multiples of "
            f"4 bytes; got shape {tuple(qdata.shape)}, dtype {qdata.dtype}, stride {qdata.stride()}, storage offset "
            f"{qdata.storage_offset()}, address {qdata.data_ptr():#x} "
            "(qdata.clone(memory_format=torch.contiguous_format) makes readable codes)")


def unit_stride(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` with unit stride along its last dim (the kernels index a bias, or a scale row, as packed)."""
    return t if t is None or t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


_COUNTERS: dict[torch.device, torch.Tensor] = {}
_CURSOR: dict[torch.device, int] = {}
_RETIRED: list[torch.Tensor] = []
COUNTER_BUFFER = 1 << 18  # counters per device (1 MiB)


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """``n`` arrival counters for one split-K kernel call, zero between kernels.

    A split-K kernel counts the finished slices of each output tile here; the
    last one sums the partials and resets the count. Successive calls get
    successive regions of one per-device buffer (128-byte aligned, wrapping
    around at its end), so split-K kernels in flight at the same time on
    different streams -- or in CUDA graphs replayed on different streams --
    count in different places unless a buffer's worth of calls lies between
    them (``COUNTER_BUFFER`` counters; a GEMV call at M = 1 takes a few hundred).
    """
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < n:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"hlwq kernels: {n} split-K counters needed but {0 if buf is None else buf.numel()} allocated; "
                "make the layer's HLWQ weight (or run the layer once) before capturing a CUDA graph"
            )
        if buf is not None:  # CUDA graphs captured earlier keep using it
            _RETIRED.append(buf)
        buf = torch.zeros(max(n, COUNTER_BUFFER), dtype=torch.int32, device=device)
        _COUNTERS[device] = buf
        _CURSOR[device] = 0
    size = -(-max(n, 1) // 32) * 32  # whole 128-byte lines
    start = _CURSOR[device]
    if start + size > buf.numel():
        start = 0
    _CURSOR[device] = start + size
    return buf[start:start + min(size, buf.numel())]


def counter_buffer(device: torch.device) -> torch.Tensor | None:
    """The whole buffer :func:`arrival_counters` hands out regions of (None before the first call)."""
    return _COUNTERS.get(device)


class SplitPlan(NamedTuple):
    """What a call signature of the GEMV, the tensor-core GEMV, the wgmma kernel or the general tensor-core kernel
    (``mma``) resolves to once (each wrapper's plan): the output's shape, split K's (or per-warp) partials' shape, the
    arrival counters it takes and the launch.
    Each of those kernels takes the same tensors: activations, int32 codes, scales, codebook, the bias (or the
    output, unused), the output, the partials and the counters (the output where unused)."""

    out_shape: tuple[int, int]
    ws_shape: tuple[int, int, int] | None  # the partials (None: none)
    counters: int  # split-K arrival counters (0: no split)
    launch: Launch


def launch_split_plan(plan: SplitPlan, x: torch.Tensor, words: torch.Tensor, scale: torch.Tensor,
                      bias: torch.Tensor | None, table: torch.Tensor, out_dtype: torch.dtype,
                      members: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
    """Allocate the output (and the partials), take the counters and launch ``plan``: what every call does, its plan
    resolved (``words``: the codes viewed as int32; ``scale`` and ``bias`` with unit stride; ``table``:
    :func:`kernel_codebook`; ``members``: the GEMV's further tensors, a group's other weights (:func:`.gemv.gemv_group`)
    then, with a norm, its three (:func:`.gemv.launch_group`))."""
    out = torch.empty(plan.out_shape, device=x.device, dtype=out_dtype)
    ws = out if plan.ws_shape is None else torch.empty(plan.ws_shape, device=x.device, dtype=torch.float32)
    counters = arrival_counters(x.device, plan.counters) if plan.counters else out  # (unused without split K)
    plan.launch(x, words, scale, table, bias if bias is not None else out, out, ws, counters, *members)
    return out


@triton.jit
def arrive(counter, n_slices):
    """Count this program in at ``counter`` once its partials are stored; whether it is the last of ``n_slices``.

    The last program sums the partials (:func:`slices_sum`) and resets the count
    to zero (:func:`reset_counter`) for the next call.
    """
    tl.debug_barrier()  # every partial of this program is stored before the release below
    return tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == n_slices - 1


@triton.jit
def reset_counter(counter):
    """The last program's reset of its arrival counter to zero for the next call, as a relaxed atomic.

    Nothing in this call touches the counter after it (every other program has
    arrived), and the next user of the counter is a later kernel, which starts
    its atomics only after this one has finished (each call counts in a region
    of its own, :func:`arrival_counters`, reused after the ring wraps or when a
    graph replays; a kernel launched with PDL waits in ``griddepcontrol.wait``
    first): so no fence is needed, nor was the acquire-release reset of before
    ordering anything across kernels. That one made the last program wait for
    its output stores and then for the atomic: 0.14-0.52 us more a call in the
    GEMV at M = 1 on 4096 x 14336 and 4096 x 12288, and 0.38-0.52 us in the
    register-operand ws kernel's former in-kernel split-K sum on 4096 x 4096
    and 1024 x 4096 at M = 4..16 (H200, ``benchmarks/RESULTS.md`` 31a, 31c).
    """
    tl.atomic_xchg(counter, 0, sem="relaxed", scope="gpu")


@triton.jit
def slices_sum(ws_ptr, offsets, mask, slice_elems, n_slices):
    """``sum_s ws_ptr[s * slice_elems + offsets]`` in float32, four slices per round trip.

    ``.cg`` loads: from L2, where the other SMs' partials are. The four loads of
    a step are independent, so the last program waits ``ceil(n_slices / 4)``
    L2 latencies rather than ``n_slices``.
    """
    total = tl.zeros(offsets.shape, dtype=tl.float32)
    for s0 in range(0, n_slices, 4):
        p = ws_ptr + s0 * slice_elems + offsets
        a = tl.load(p, mask=mask, other=0.0, cache_modifier=".cg")
        b = tl.load(p + slice_elems, mask=mask & (offsets * 0 + s0 + 1 < n_slices), other=0.0, cache_modifier=".cg")
        c = tl.load(p + 2 * slice_elems, mask=mask & (offsets * 0 + s0 + 2 < n_slices), other=0.0, cache_modifier=".cg")
        d = tl.load(p + 3 * slice_elems, mask=mask & (offsets * 0 + s0 + 3 < n_slices), other=0.0, cache_modifier=".cg")
        total += (a + b) + (c + d)
    return total


@triton.jit
def _reduce_split_k_kernel(ws_ptr, bias_ptr, out_ptr, MN, N, n_slices, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
                           PDL: tl.constexpr):
    """``out = sum over the slices of ws (+ bias)`` for ``BLOCK`` consecutive elements of ``[M, N]``."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < MN
    wait_for_inputs(PDL)  # (launched early with PDL: the partials are read once the kernel writing them has finished)
    total = slices_sum(ws_ptr, offsets, mask, tl.cast(MN, tl.int64), n_slices)  # (slice offsets past 2**31)
    if HAS_BIAS:
        total += tl.load(bias_ptr + offsets % N, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=mask)


def reduce_split_k(ws: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, dependent: bool = False
                   ) -> torch.Tensor:
    """Sum a split-K kernel's partials into its output, in a kernel of their own: ``out[:] = ws.sum(0) (+ bias)``.

    Spread over every SM, where the last program of each tile summing its tile
    (:func:`arrive`) leaves the sum to 1 / SPLIT_K of the SMs: the
    register-operand ws kernel's sum at every tile size (from BM = 128 since
    ``benchmarks/NOTES.md`` session 23; below it since session 31, where its
    last program's chain of round trips took longer, ``benchmarks/RESULTS.md``
    31b). 1024 elements and 8 warps a program (one 16-byte load a slice and
    thread): 4.0 us a call for 16 MB of partials on an H200, against 5.8-7.3
    for 1024 to 8192 elements with 4 or 8 warps otherwise
    (``benchmarks/RESULTS.md`` 23a2).

    Args:
        ws: (SPLIT_K, M, N) float32 partials, contiguous.
        bias: (N,) unit-stride, or None.
        out: (M, N) contiguous, written and returned.
        dependent: launch with programmatic dependent launch (:func:`pdl`), right behind the kernel writing ``ws``.
    """
    if ws.dtype != torch.float32 or ws.dim() != 3 or ws.shape[1:] != out.shape or not ws.is_contiguous():
        raise ValueError(f"reduce_split_k: partials must be contiguous float32 (SPLIT_K, *out.shape) = (S, "
                         f"{', '.join(map(str, out.shape))}), got {ws.dtype} {tuple(ws.shape)}")
    if not out.is_contiguous() or (bias is not None and (bias.shape != out.shape[-1:] or bias.stride(0) != 1)):
        raise ValueError(f"reduce_split_k: out must be contiguous and bias unit-stride of length {out.shape[-1]}, got "
                         f"out strides {out.stride()} and bias {None if bias is None else tuple(bias.shape)}")
    _reduce_launch(out.numel(), out.shape[-1], ws.shape[0], bias is not None, dependent)(
        ws, bias if bias is not None else out, out)
    return out


@plan_cache
def _reduce_launch(MN: int, N: int, slices: int, has_bias: bool, dependent: bool) -> Launch:
    """:func:`reduce_split_k`'s launch for ``slices`` partials of ``MN`` elements (rows of ``N``)."""
    BLOCK = 1024
    return Launch(_reduce_split_k_kernel, (cdiv(MN, BLOCK),), (MN, N, slices),
                  dict(HAS_BIAS=has_bias, BLOCK=BLOCK, PDL=dependent), dict(num_warps=8, **launch_options(dependent)))


@triton.jit
def sum_if_last(partial, ws_ptr, counter, offsets, mask, slice_elems, slice_index, n_slices):
    """The split-K protocol for one tile: ``(is_last, sum)``, the sum zero unless last.

    Stores this program's ``partial`` as slice ``slice_index`` of the workspace,
    :func:`arrive`, then, for the last program, :func:`slices_sum` and the reset.
    """
    tl.store(ws_ptr + slice_index.to(tl.int64) * slice_elems + offsets, partial, mask=mask)
    last = arrive(counter, n_slices)
    total = tl.zeros(offsets.shape, dtype=tl.float32)
    if last:
        total = slices_sum(ws_ptr, offsets, mask, slice_elems, n_slices)
        reset_counter(counter)
    return last, total


@triton.jit
def sum_partials(ws_ptr, bias_ptr, out_ptr, row_lo, row_hi, m, M, N, n_parts, HAS_BIAS: tl.constexpr):
    """``out[m, rows] = sum of the n_parts partials [n_parts, M, N] (+ bias)`` for rows ``row_lo..row_hi``."""
    out_offset = tl.cast(m, tl.int64) * N  # (m may be a Python int)
    slice_elems = tl.cast(M, tl.int64) * N  # (M may be specialized to a Python int)
    for chunk in range(row_lo, row_hi, 128):
        rows_out = chunk + tl.arange(0, 128)
        in_range = rows_out < row_hi
        offsets = out_offset + rows_out
        total = slices_sum(ws_ptr, offsets, in_range, slice_elems, n_parts)
        if HAS_BIAS:
            total += tl.load(bias_ptr + rows_out, mask=in_range, other=0.0).to(tl.float32)
        tl.store(out_ptr + offsets, total.to(out_ptr.dtype.element_ty), mask=in_range)


# Programmatic dependent launch (PDL, sm_90 and newer). A kernel launched with it may start while the kernel before
# it in the stream is still running, once every program of that kernel has called ``griddepcontrol.launch_dependents``
# (:func:`release_dependents`) or exited. Before ``griddepcontrol.wait`` (:func:`wait_for_inputs`), which returns once
# the kernel before has finished and its writes are visible, it may only compute addresses and ask the L2 for lines
# (:func:`prefetch_l2`, a hint that cannot read stale data): every load and store comes after the wait. So a kernel's
# launch and prologue overlap the tail of the one before it, and a kernel launched this way completes only after the
# one before it has (every program waits), which keeps the stream's order for the kernels after it. The GEMVs and
# the wgmma kernel release the next one after their main loop (released at the top, the tensor-core paths measured
# up to 46% slower: session 14, benchmarks/NOTES.md), the FWHT at its top; the register-operand ws kernel (.wsrs)
# waits before its partitions start and releases none early, its split-K sum kernel waits after its offsets. The
# general tensor-core kernel (.mma) and the dequantize path launch as before. Opt-in (:func:`pdl`) but for the
# tensor-core GEMV, the wgmma and the register-operand ws kernels behind their FWHT (:func:`hlwq_ops.kernels.
# launches_dependent`).


@functools.cache
def capability(device: torch.device) -> tuple[int, int]:
    """The CUDA compute capability of ``device`` (cached: it is asked on every launch)."""
    return torch.cuda.get_device_capability(device)


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA ``device`` (cached: it is asked on every launch)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def env_flag(name: str, when_unset: str) -> bool | None:
    """An environment variable that is ``0`` or ``1``: False or True; None where it is unset or empty (the caller's
    default, ``when_unset`` in the error). Anything else is a ValueError, not a silent default."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{name} must be 0 or 1 (or unset: {when_unset}), got {value!r}")
    return None if value == "" else value == "1"


@functools.cache
def pdl_requested() -> bool | None:
    """``HLWQ_PDL``: True for ``1`` (every kernel that can launches with programmatic dependent launch), False for
    ``0`` (none does), None where it is unset or empty (each path's default, :func:`pdl`). Read once per process, on
    the first launch (an environment lookup costs about as much as a dict of the launch's arguments;
    ``pdl_requested.cache_clear()`` reads it again)."""
    return env_flag("HLWQ_PDL", "each path's default")


def pdl(device: torch.device, default: bool = False) -> bool:
    """Whether a kernel on ``device`` launches with programmatic dependent launch: as ``HLWQ_PDL`` says
    (:func:`pdl_requested`), else ``default``, on a GPU of compute capability 9.0 or newer.

    Off by default but for the tensor-core kernels behind their FWHT (:func:`hlwq_ops.kernels.launches_dependent`,
    measured 1-12% faster at M = 3..512, ``benchmarks/RESULTS.md`` 25b-c and 26): with every kernel launched this way,
    the GEMVs too, a call that follows another of the same op was 7-14% faster on 1024 x 4096 at M = 1..8, between
    6% slower and 7% faster on 4096 x 4096, and 2-7% slower on 4096 x 14336 at every M (H200, session 14 with
    session 14's kernels, ``benchmarks/RESULTS.md`` 14a). The tiles are tuned as the first call of a shape
    launched them (the tuning cache does not tell the two apart).
    """
    if device.type != "cuda":
        return False
    requested = pdl_requested()
    return (default if requested is None else requested) and capability(device) >= (9, 0)


def launch_options(enabled: bool) -> dict:
    """Triton launch keywords for a kernel whose ``PDL`` constexpr is ``enabled`` (:func:`pdl`)."""
    return {"launch_pdl": True} if enabled else {}


@triton.jit
def release_dependents(PDL: tl.constexpr):
    """Let the next kernel in the stream launch (if it was launched with PDL) once every program got here."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait_for_inputs(PDL: tl.constexpr):
    """Wait until the kernel before this one has finished and its writes are visible (with PDL; else a no-op)."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def prefetch_l2(base, first, row_bytes, n_rows, span, MAX_ROWS: tl.constexpr, LINES: tl.constexpr):
    """Ask the L2 for bytes ``first .. first + span`` of rows ``0 .. n_rows - 1`` (``row_bytes`` apart, ``n_rows``
    at most ``MAX_ROWS``) at ``base`` (an int64 address): one ``prefetch.global.L2`` per 128-byte line, up to
    ``LINES`` lines per row, so ``span`` must be at most ``128 * (LINES - 1) + 1`` bytes.

    GPU only (inline PTX). A prefetch returns nothing, so it is safe before :func:`wait_for_inputs`.
    """
    i = tl.arange(0, MAX_ROWS * LINES)
    start = base + (i // LINES).to(tl.int64) * row_bytes + first  # the row's first byte
    address = (start & -128) + (i % LINES) * 128  # its lines
    wanted = (i // LINES < n_rows) & (address < start + span)
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p prefetch.global.L2 [$2]; mov.u32 $0, 0; }",
        "=r,r,l",
        [wanted.to(tl.int32), address],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )
