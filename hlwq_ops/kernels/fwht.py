"""Blockwise normalized Walsh-Hadamard transform on the tensor cores.

A program transforms ``BR`` blocks of ``B`` values: ``[BR, B] @ H_B`` with
``H_B`` the unnormalized +-1 Sylvester matrix, on the tensor cores in
``tf32x3`` mode (x split into two tf32 terms, H exact in tf32: float32
accuracy), then the ``1 / sqrt(B)`` scale. Not bfloat16 terms: Triton's
interpreter (which runs these kernels in CI) miscomputes bfloat16 dots.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..hadamard import hadamard_matrix

__all__ = ["MAX_KERNEL_BLOCK", "fwht"]

# Up to 128 the dense product is cheap; larger blocks use the reference.
MAX_KERNEL_BLOCK = 128
_SIGNS: dict[tuple[int, str], torch.Tensor] = {}


def _signs(block_size: int, device: torch.device) -> torch.Tensor:
    """(B, B) float32 +-1 Hadamard, cached per device."""
    key = (block_size, str(device))
    if key not in _SIGNS:
        h = hadamard_matrix(block_size, torch.float64, device) * block_size**0.5
        _SIGNS[key] = h.round().to(torch.float32)
    return _SIGNS[key]


@triton.jit
def _fwht_kernel(
    x_ptr,  # [ROWS, B] input blocks
    h_ptr,  # [B, B] +-1 float32
    out_ptr,  # [ROWS, B], or permuted rows of activations (PER_WORD)
    ROWS,
    BLOCKS,  # blocks per activation row (PER_WORD only)
    B: tl.constexpr,
    PER_WORD: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
):
    # a program computes BC of the B outputs of BR blocks: small M still spreads over SMs
    rows = tl.program_id(0) * BR + tl.arange(0, BR)
    k = tl.arange(0, B)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    mask = rows[:, None] < ROWS
    x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * B + k[None, :], mask=mask, other=0.0).to(tl.float32)
    h = tl.load(h_ptr + k[:, None] * B + cols[None, :])
    acc = tl.dot(x, h, input_precision="tf32x3") * (1.0 / tl.sqrt(float(B)))
    if PER_WORD:  # position p of a row goes to (p % PER_WORD) * K / PER_WORD + p / PER_WORD
        K = BLOCKS * B
        p = (rows % BLOCKS)[:, None] * B + cols[None, :]
        out_offs = (rows // BLOCKS).to(tl.int64)[:, None] * K + (p % PER_WORD) * (K // PER_WORD) + p // PER_WORD
    else:
        out_offs = rows.to(tl.int64)[:, None] * B + cols[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def fwht(x: torch.Tensor, block_size: int, out_dtype: torch.dtype, per_word: int = 0) -> torch.Tensor:
    """Blockwise FWHT of the last dim of ``x`` (K a multiple of ``block_size`` <= 128).

    Args:
        per_word: if nonzero, each row of the result is reordered as the
            tensor-core kernel reads it: position ``p`` goes to
            ``(p % per_word) * K / per_word + p // per_word``
            (:func:`hlwq_ops.kernels.wgmma.permute_activations`).

    Returns:
        A tensor of x's shape in ``out_dtype``.
    """
    x = x.contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    rows = x.numel() // block_size
    if rows == 0:
        return out
    br = 16 if rows <= 2048 else 64  # small tiles until there are enough blocks to fill the GPU
    bc = min(block_size, 32 if rows <= 2048 else 128)
    _fwht_kernel[(triton.cdiv(rows, br), block_size // bc)](
        x, _signs(block_size, x.device), out, rows, x.shape[-1] // block_size, B=block_size, PER_WORD=per_word, BR=br,
        BC=bc, num_warps=4,
    )
    return out
