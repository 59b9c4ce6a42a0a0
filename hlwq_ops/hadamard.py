"""Normalized Sylvester Walsh-Hadamard matrices and the reference blockwise FWHT."""

from __future__ import annotations

import math

import torch

__all__ = ["MIN_BLOCK_SIZE", "MAX_BLOCK_SIZE", "check_block_size", "hadamard_matrix", "fwht_ref"]

# A block must fill whole 32-bit words of packed codes at every bit width.
MIN_BLOCK_SIZE = 32
MAX_BLOCK_SIZE = 1024


def check_block_size(block_size: int) -> None:
    """Raise ValueError unless ``block_size`` is a power of two in 32..1024 (a symbolic one is specialized, as
    :func:`hlwq_ops.codebook.check_bits` does)."""
    if isinstance(block_size, torch.SymInt):
        block_size = int(block_size)
    ok = (
        isinstance(block_size, int)
        and not isinstance(block_size, bool)
        and MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE
        and block_size & (block_size - 1) == 0
    )
    if not ok:
        raise ValueError(
            f"block_size must be a power of two in {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}, got {block_size!r}"
        )


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The normalized Sylvester Hadamard matrix ``H_n``.

    ``H_1 = [1]``, ``H_2n = [[H_n, H_n], [H_n, -H_n]] / sqrt(2)``: symmetric,
    orthonormal and its own inverse. Entry ``(i, j)`` is
    ``(-1) ** popcount(i & j) / sqrt(n)``.

    Returns:
        (n, n)
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two, got {n}")
    i = torch.arange(n, device=device)
    bits = i[:, None] & i[None, :]
    parity = torch.zeros_like(bits)
    while bool(bits.any()):
        parity ^= bits & 1
        bits = bits >> 1
    return ((1 - 2 * parity).to(torch.float64) / math.sqrt(n)).to(dtype)


def fwht_ref(x: torch.Tensor, block_size: int = 128) -> torch.Tensor:
    """Blockwise normalized Walsh-Hadamard transform of the last dim, in plain torch.

    Equivalent to ``(x.view(..., K // B, B) @ hadamard_matrix(B)).view(..., K)``,
    computed with ``log2(B)`` butterfly stages in the dtype of ``x`` (use
    float32 or float64 for a reference).

    Args:
        x: (..., K) with K a multiple of ``block_size``.
        block_size: B, a power of two.

    Returns:
        (..., K), same dtype as ``x``.
    """
    K = x.shape[-1]
    if K % block_size:
        raise ValueError(f"x has last dim {K}, expected a multiple of block_size={block_size}")
    lead = x.shape[:-1]
    rows = x.numel() // K if K else 0  # not -1: ambiguous when there are no elements
    y = x.reshape(rows, K // block_size, block_size)
    h = block_size // 2
    while h >= 1:
        pairs = y.view(y.shape[0], y.shape[1], block_size // (2 * h), 2, h)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).view(y.shape)
        h //= 2
    return (y * (1.0 / math.sqrt(block_size))).reshape(*lead, K)
