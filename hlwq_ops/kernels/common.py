"""Pieces shared by the Triton kernels: plane geometry and lookup tables."""

from __future__ import annotations

import weakref

import torch
from ..codebook import codebook as standard_codebook
from ..format import plane_widths

__all__ = ["PAIR_LUT_MAX_BITS", "planes", "lookup_table"]

# A pair table has 4**bits entries of 8 bytes: 8 KB at Q5, 32 KB at Q6 (too
# much L1 pressure), so bits 6..8 look codes up one at a time.
PAIR_LUT_MAX_BITS = 5


def planes(bits: int) -> dict[str, int]:
    """Kernel constexprs ``W0, O0, W1, O1, W2, O2``: width and bit offset of up to three planes (0 if absent)."""
    out = {f"W{p}": 0 for p in range(3)} | {f"O{p}": 0 for p in range(3)}
    for p, (w, offset) in enumerate(zip(plane_widths(bits), _offsets(bits))):
        out[f"W{p}"], out[f"O{p}"] = w, offset
    return out


def _pair_table(c: torch.Tensor, bits: int) -> torch.Tensor:
    """(4**bits,) int64: entry ``idx`` holds (c[even], c[odd]) as two float32.

    ``idx`` concatenates, plane by plane from the lowest, the 2w-bit field that
    a pair of consecutive codes occupies in a plane of width w (even code in
    the low w bits).
    """
    idx = torch.arange(4**bits, device=c.device)
    even = torch.zeros_like(idx)
    odd = torch.zeros_like(idx)
    for w, offset in zip(plane_widths(bits), _offsets(bits)):
        field = (idx >> (2 * offset)) & ((1 << 2 * w) - 1)
        even |= (field & ((1 << w) - 1)) << offset
        odd |= (field >> w) << offset
    return torch.stack([c[even], c[odd]], dim=-1).contiguous().view(torch.int64).view(-1)


def _offsets(bits: int) -> list[int]:
    out, offset = [], 0
    for w in plane_widths(bits):
        out.append(offset)
        offset += w
    return out


_STANDARD: dict[tuple[int, str, bool], torch.Tensor] = {}
# (id(codebook), pair) -> (weak reference, version when built, table)
_CUSTOM: dict[tuple[int, bool], tuple[weakref.ref, int, torch.Tensor]] = {}


def lookup_table(bits: int, codebook: torch.Tensor | None, device: torch.device, pair: bool) -> torch.Tensor:
    """The kernel's table: pair table (int64) or per-code table (float32).

    Built once per (bits, device) for the standard codebook, and once per
    codebook tensor for a custom one (rebuilt if it is modified in place;
    dropped when it is freed).
    """
    if codebook is None:
        key = (bits, str(device), pair)
        table = _STANDARD.get(key)
        if table is None:
            c = standard_codebook(bits, device)
            table = _pair_table(c, bits) if pair else c
            _STANDARD[key] = table
        return table
    key = (id(codebook), pair)
    cached = _CUSTOM.get(key)
    if cached is not None and cached[0]() is codebook and cached[1] == codebook._version:
        return cached[2]
    table = _pair_table(codebook, bits) if pair else codebook
    _CUSTOM[key] = (weakref.ref(codebook, lambda _, key=key: _CUSTOM.pop(key, None)), codebook._version, table)
    return table
