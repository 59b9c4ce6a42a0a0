"""Nearest-centroid search for quantizing: ``torch.bucketize`` against a codebook's midpoints, without a binary search.

Quantizing a weight looks every rotated coordinate up in the codebook once per scale factor the search tries (21
of them, :data:`hlwq_ops.format.SEARCH_FACTORS`). On a CPU ``torch.bucketize`` took ~68% of that time
(``benchmarks/NOTES.md`` session 65; about 14 ns a value on two cores, session 66). :class:`CentroidGrid` gives the
same codes from a uniform grid over the midpoints, fine enough that a cell, widened by half a cell on each side, holds
at most one midpoint: a value's code is its cell's lowest code plus one comparison, and its centroid one of two. Both
are table look-ups (``index_select``) and elementwise ops. :mod:`.format` searches with it on a CPU only: on an H100
``bucketize`` was the faster (0.215 s a Llama-3-8B layer against the grid's 0.298).

Exact, not approximate: for every float32 ``v`` but NaN, on every codebook :meth:`CentroidGrid.for_codebook` builds
a grid for, ``grid.codes(v) == torch.bucketize(v, midpoints)`` and ``grid.centroids(v) == codebook[torch.bucketize(v,
midpoints)]`` (``tests/test_nearest.py``). The float32 arithmetic that places a value in a cell errs by ~1e-3 of a
cell at most (cells at least ``_MIN_WIDTH`` wide, at most ``_MAX_CELLS`` of them), far below the half-cell margin, so
the cell's lowest code never exceeds the value's code, and the one midpoint the widened cell can hold decides the
rest.
"""

from __future__ import annotations

import math

import torch

__all__ = ["CentroidGrid", "midpoints"]

# Cells per smallest midpoint gap: > 2 keeps a widened cell (two cells wide) to at most one midpoint.
_CELLS_PER_GAP = 3
# A floor for codebooks of few, even gaps (Q2-Q4 get 64): the table stays tiny either way.
_MIN_CELLS = 64
# Beyond this a table stops fitting in a CPU's L2; such a codebook (a custom one with a wide spread of gaps) is
# searched by torch.bucketize instead.
_MAX_CELLS = 1 << 16
# The narrowest cell: far above float32's subnormal spacing (2**-149), so that the float32 arithmetic placing a value
# in a cell errs by far less than the half-cell margin, and 1 / width stays finite in float32.
_MIN_WIDTH = 2.0**-100


def midpoints(codebook: torch.Tensor) -> torch.Tensor:
    """(L - 1,) decision boundaries of an (L,) sorted codebook: a value's nearest centroid is the number of
    boundaries below it."""
    return 0.5 * (codebook[1:] + codebook[:-1])


class CentroidGrid:
    """Nearest-centroid codes and centroids of float32 values, by a uniform grid over a codebook's midpoints.

    Build it with :meth:`for_codebook`, which returns None for a codebook it cannot serve exactly. The values given
    must be float32 and not NaN (an infinity goes to the first or last cell, as it should). The tables live on the
    codebook's device; :mod:`.format` uses the grid on a CPU.
    """

    def __init__(self, b: torch.Tensor, codebook: torch.Tensor, cells: int):
        b64 = b.double().cpu()
        self.lo = float(b[0])  # a float32 value: exact in the float32 subtraction below
        span = float(b[-1]) - self.lo
        self.cells = cells
        self.inv_width = cells / span
        width = span / cells
        edges = self.lo + width * torch.arange(cells + 1, dtype=torch.float64)
        below = torch.searchsorted(b64, edges[:-1] - 0.5 * width)  # midpoints below each widened cell
        upto = torch.searchsorted(b64, edges[1:] + 0.5 * width, right=True)  # ... and up to its top
        self._exact = bool((upto - below).max() <= 1)
        last = len(codebook) - 1
        inside = upto > below  # the one midpoint inside the widened cell, if any, is number `below`
        threshold = torch.where(inside, b.cpu()[below.clamp(max=last - 1)], torch.tensor(math.inf))
        c = codebook.to(torch.float32).cpu()
        device = codebook.device
        # per cell the centroids below and above its midpoint, as one 8-byte entry (one look-up for both)
        self.pairs = torch.stack([c[below], c[(below + 1).clamp(max=last)]], 1).view(torch.int64)[:, 0].to(device)
        self.threshold = threshold.to(device)
        self.lowest = below.to(torch.uint8).to(device)  # codes < 2**8

    @classmethod
    def for_codebook(cls, codebook: torch.Tensor) -> CentroidGrid | None:
        """The grid of a sorted, strictly ascending (L,) codebook; None where ``torch.bucketize`` must do: fewer
        than three entries, midpoints that overflow float32 or lie too close together for ``_MAX_CELLS`` cells, or
        a cell narrower than ``_MIN_WIDTH``."""
        if len(codebook) < 3:
            return None
        b = midpoints(codebook.to(torch.float32))  # as bucketize sees them
        if not bool(torch.isfinite(b).all()):
            return None
        span = float(b[-1]) - float(b[0])
        cells = max(_MIN_CELLS, math.ceil(_CELLS_PER_GAP * span / float((b[1:] - b[:-1]).min())))
        if cells > _MAX_CELLS or span / cells < _MIN_WIDTH or span > torch.finfo(torch.float32).max:
            return None
        grid = cls(b, codebook, cells)
        return grid if grid._exact else None

    def _cells(self, v: torch.Tensor) -> torch.Tensor:
        if v.dtype != torch.float32:
            raise TypeError(f"CentroidGrid searches float32 values, got {v.dtype}")
        return ((v - self.lo) * self.inv_width).clamp_(0, self.cells - 1).to(torch.int32).reshape(-1)

    def centroids(self, v: torch.Tensor) -> torch.Tensor:
        """(...) float32 -> (...) float32: ``codebook[bucketize(v, midpoints)]``."""
        cells = self._cells(v)
        pair = torch.index_select(self.pairs, 0, cells).view(torch.float32).view(*v.shape, 2)
        above = torch.index_select(self.threshold, 0, cells).view(v.shape) < v
        return torch.where(above, pair[..., 1], pair[..., 0])

    def codes(self, v: torch.Tensor) -> torch.Tensor:
        """(...) float32 -> (...) int64: ``bucketize(v, midpoints)``."""
        cells = self._cells(v)
        above = torch.index_select(self.threshold, 0, cells).view(v.shape) < v
        return torch.index_select(self.lowest, 0, cells).view(v.shape).to(torch.int64) + above
