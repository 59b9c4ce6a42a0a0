"""Pieces shared by the Triton kernels: plane geometry and the codebook."""

from __future__ import annotations

import torch

from ..codebook import codebook as standard_codebook
from ..format import plane_widths

__all__ = ["planes", "kernel_codebook"]


def planes(bits: int) -> dict[str, int]:
    """Kernel constexprs ``W0, O0, W1, O1, W2, O2``: width and bit offset of up to three planes (0 if absent)."""
    out = {f"W{p}": 0 for p in range(3)} | {f"O{p}": 0 for p in range(3)}
    offset = 0
    for p, w in enumerate(plane_widths(bits)):
        out[f"W{p}"], out[f"O{p}"] = w, offset
        offset += w
    return out


def kernel_codebook(bits: int, codebook: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The (2**bits,) float32 codebook the kernels look codes up in (cached for the standard one)."""
    return standard_codebook(bits, device) if codebook is None else codebook
