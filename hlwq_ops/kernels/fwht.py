"""Blockwise normalized Walsh-Hadamard transform on the tensor cores.

A program transforms ``BR`` blocks of ``B`` values: ``[BR, B] @ H_B`` with
``H_B`` the unnormalized +-1 Sylvester matrix, then the ``1 / sqrt(B)`` scale.
16-bit inputs multiply in their own dtype: every product with +-1 is exact and
the sums are float32, so the result is as exact as the ``tf32x3`` mode that
float32 inputs take (x split into two tf32 terms, H exact in tf32). Triton's
interpreter (which runs these kernels in CI) miscomputes 16-bit dots, so there
every input takes the float32 path.

With ``per_word`` the output is reordered for the register-operand tensor-core
kernel (:func:`hlwq_ops.kernels.wgmma.permute_activations`); the tile is
transposed in registers first, so that each store writes runs of consecutive
positions rather than scattering single values.

Past 2048 blocks (M > 64 at K = 4096) at most two programs per SM along the
blocks (times the column programs: two for float32 at B = 128) loop over the
tiles of 64 blocks, the sign matrix loaded once per program and the next tiles'
loads in flight (``tl.range``, three stages) while one is multiplied.
With the order within each block (``span`` one block, as the
register-operand ws kernel reads it) each program stores whole reordered
blocks as rows (``ROW_BLOCK``). Measured on an H200 in that order, a probe
kernel with this code against one program per tile (``benchmarks/RESULTS.md``
22a, same run): M = 512, K = 14336 from 13.8 to 9.9 us, M = 2048 from 43.8 to
34.3 (a copy of the same bytes: 9.0 and 30.0); within 3% either way at
M = 128..256, K = 4096. This module's kernel (23b): 9.85 and 34.25 us there,
the whole-row store 5-11% faster than the general one at every size. Float32
inputs at large M (the general tensor-core kernel's) take the same loop, not
timed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..hadamard import hadamard_matrix
from .common import launch_options, pdl, release_dependents, sm_count, wait_for_inputs
from .launch import Launch, cdiv, plan_cache

__all__ = ["MAX_KERNEL_BLOCK", "fwht", "launch_plan", "plan_for", "prepare"]

# Up to 128 the dense product is cheap; larger blocks use the reference.
MAX_KERNEL_BLOCK = 128
_SIGNS: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def _signs(block_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, B) +-1 Hadamard in ``dtype``, cached per device."""
    key = (block_size, str(device), dtype)
    if key not in _SIGNS:
        h = hadamard_matrix(block_size, torch.float64, device) * block_size**0.5
        _SIGNS[key] = h.round().to(dtype)
    return _SIGNS[key]


def prepare(block_size: int, device: torch.device) -> None:
    """Make the sign matrices :func:`fwht` reads on ``device`` (every input dtype) now, not on its first call."""
    if block_size <= MAX_KERNEL_BLOCK:
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            _signs(block_size, device, dtype)


@triton.jit
def _fwht_kernel(
    x_ptr,  # [ROWS, B] input blocks
    h_ptr,  # [B, B] +-1, in x's dtype (16-bit x) or float32
    out_ptr,  # [ROWS, B], or permuted rows of activations (PER_WORD)
    ROWS,
    BLOCKS,  # blocks per activation row (PER_WORD only)
    B: tl.constexpr,
    PER_WORD: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
    ROW_BLOCK: tl.constexpr,  # PER_WORD, one block a row and BC = B: each reordered block is one contiguous row
    STAGES: tl.constexpr,
    PDL: tl.constexpr,
):
    # With programmatic dependent launch (hlwq_ops.kernels.common) a kernel after this one that was launched with it
    # too (the tensor-core GEMV, wgmma or the register-operand ws kernel) starts at once; the tensor-core GEMV asks the
    # L2 for its first rows while this one runs, the ws kernel sets up its barriers.
    release_dependents(PDL)
    wait_for_inputs(PDL)
    # a program computes BC of the B outputs of the tiles of BR blocks it loops over: small M still spreads over SMs
    k = tl.arange(0, B)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    h = tl.load(h_ptr + k[:, None] * B + cols[None, :])
    for tile in tl.range(tl.program_id(0), tl.cdiv(ROWS, BR), tl.num_programs(0), num_stages=STAGES):
        rows = tile * BR + tl.arange(0, BR)
        mask = rows[:, None] < ROWS
        x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * B + k[None, :], mask=mask, other=0.0)
        if h.dtype == tl.float32:
            acc = tl.dot(x.to(tl.float32), h, input_precision="tf32x3")
        else:
            acc = tl.dot(x, h)  # exact products, float32 sums
        acc = acc * (1.0 / tl.sqrt(float(B)))
        if ROW_BLOCK:  # p -> (p % PER_WORD) * B / PER_WORD + p / PER_WORD within the row: whole rows stored
            t = tl.reshape(tl.permute(tl.reshape(acc, (BR, B // PER_WORD, PER_WORD)), (0, 2, 1)), (BR, B))
            tl.store(out_ptr + rows.to(tl.int64)[:, None] * B + k[None, :], t.to(out_ptr.dtype.element_ty), mask=mask)
        elif PER_WORD:  # position p of a row goes to (p % PER_WORD) * K / PER_WORD + p / PER_WORD
            W: tl.constexpr = BC // PER_WORD
            t = tl.permute(tl.reshape(acc, (BR, W, PER_WORD)), (0, 2, 1))  # [BR, PER_WORD, W]: (block, a, word)
            r = rows[:, None, None]
            a = tl.arange(0, PER_WORD)[None, :, None]
            w = tl.arange(0, W)[None, None, :]
            K = BLOCKS * B
            first = ((r % BLOCKS) * B + tl.program_id(1) * BC) // PER_WORD  # the tile's first word in the row
            out_offs = (r // BLOCKS).to(tl.int64) * K + a * (K // PER_WORD) + first + w
            tl.store(out_ptr + out_offs, t.to(out_ptr.dtype.element_ty), mask=r < ROWS)
        else:
            out_offs = rows.to(tl.int64)[:, None] * B + cols[None, :]
            tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _programs(tiles: int, device: torch.device) -> int:
    """Programs along the blocks: one per tile up to two per SM (on the CPU, which runs the interpreter in the tests,
    four, so that its programs loop too)."""
    return min(tiles, 2 * sm_count(device) if device.type == "cuda" else 4)


@plan_cache
def _plan(rows: int, K: int, block_size: int, dtype: torch.dtype, per_word: int, device: torch.device,
          dependent: bool) -> tuple[torch.Tensor, Launch]:
    """The sign matrix and the launch of :func:`fwht` for ``rows`` blocks of rows of length ``K`` in ``dtype``."""
    exact16 = dtype in (torch.bfloat16, torch.float16) and device.type != "cpu"
    large = rows > 2048  # small tiles until there are enough blocks to fill the GPU
    br = 64 if large else 16
    bc = min(block_size, (128 if exact16 else 64) if large else 32)
    row_block = bool(per_word) and K == block_size and bc == block_size
    launch = Launch(
        _fwht_kernel, (_programs(cdiv(rows, br), device), block_size // bc), (rows, K // block_size),
        dict(B=block_size, PER_WORD=per_word, BR=br, BC=bc, ROW_BLOCK=row_block, STAGES=3 if large else 1,
             PDL=dependent),
        dict(num_warps=8 if large else 4, **launch_options(dependent)),
    )
    return _signs(block_size, device, dtype if exact16 else torch.float32), launch


def fwht(x: torch.Tensor, block_size: int, out_dtype: torch.dtype, per_word: int = 0,
         span: int | None = None, dependent: bool = False) -> torch.Tensor:
    """Blockwise FWHT of the last dim of ``x`` (K a multiple of ``block_size`` <= 128).

    Args:
        per_word: if nonzero, each row of the result is reordered as the
            tensor-core kernel reads it: position ``p`` goes to
            ``(p % per_word) * K / per_word + p // per_word``
            (:func:`hlwq_ops.kernels.wgmma.permute_activations`).
        span: with ``per_word``, reorder each run of ``span`` positions (whole
            blocks) on its own instead of the whole row
            (``permute_activations(..., span)``): the kernel then sees each run as a row.
        dependent: launch with programmatic dependent launch by default, letting the next kernel launch at once
            (:mod:`.common`): the caller's choice for the kernel this one feeds; ``HLWQ_PDL`` overrides it and it
            is off but on sm_90 and newer (:func:`.common.pdl`).

    Returns:
        A tensor of x's shape in ``out_dtype``.
    """
    if span:
        if span % block_size or x.shape[-1] % span:
            raise ValueError(f"fwht: span must be whole blocks ({block_size}) and divide K ({x.shape[-1]}), "
                             f"got {span}")
    x = x.contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    if x.numel() < block_size:
        return out
    return launch_plan(plan_for(x, block_size, per_word, span, dependent), x, out)


def plan_for(x: torch.Tensor, block_size: int, per_word: int = 0, span: int | None = None,
             dependent: bool = False) -> tuple[torch.Tensor, Launch]:
    """The sign matrix and launch of :func:`fwht` for contiguous ``x`` (arguments as it takes them, which the caller
    has checked: ``span`` is not): a call signature's plan, which :func:`launch_plan` runs."""
    return _plan(x.numel() // block_size, span or x.shape[-1], block_size, x.dtype, per_word, x.device,
                 pdl(x.device, default=dependent))


def launch_plan(plan: tuple[torch.Tensor, Launch], x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Rotate contiguous ``x`` into ``out`` (x's shape, contiguous) by ``plan`` (:func:`plan_for`); ``out``."""
    signs, launch = plan
    launch(x, signs, out)
    return out
