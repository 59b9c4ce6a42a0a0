"""Nearest-centroid search for quantizing: ``torch.bucketize`` against a codebook's midpoints, without a binary search.

Quantizing a weight looks every rotated coordinate up in the codebook once per scale factor the search tries (21
of them, :data:`hlwq_ops.format.SEARCH_FACTORS`). On a CPU ``torch.bucketize`` took ~68% of that time (about 14 ns a
value on two cores, ``benchmarks/NOTES.md`` session 66). :class:`CentroidGrid` gives the same codes from a uniform grid
over the midpoints, fine enough that a cell, widened by half a cell on each side, holds at most one midpoint: a
value's code is its cell's lowest code plus one comparison, and its centroid one of two. Both are table look-ups
(``index_select``) and elementwise ops. :mod:`.format` searches with it on a CPU only: on an H100 ``bucketize``
was the faster (0.215 s a Llama-3-8B layer against the grid's 0.298).

Exact, not approximate: for every finite float32 ``v``, ``grid.codes(v) == torch.bucketize(v, midpoints)`` and
``grid.centroids(v) == codebook[torch.bucketize(v, midpoints)]`` (``tests/test_nearest.py``). The cell a value
falls in is computed with rounding error far below the half-cell margin, so the cell's lowest code never exceeds the
value's code, and the one midpoint the widened cell can hold decides the rest.
"""

from __future__ import annotations

import math

import torch

__all__ = ["CentroidGrid", "midpoints"]

# Cells per smallest midpoint gap: > 2 keeps a widened cell (two cells wide) to at most one midpoint.
_CELLS_PER_GAP = 3
_MIN_CELLS = 64
# Beyond this a table stops fitting in a CPU's L2; such a codebook (a custom one with a wide spread of gaps) is
# searched by torch.bucketize instead.
_MAX_CELLS = 1 << 16


def midpoints(codebook: torch.Tensor) -> torch.Tensor:
    """(L - 1,) decision boundaries of an (L,) sorted codebook: a value's nearest centroid is the number of
    boundaries below it."""
    return 0.5 * (codebook[1:] + codebook[:-1])


class CentroidGrid:
    """Nearest-centroid codes and centroids of float32 values, by a uniform grid over a codebook's midpoints.

    Build it with :meth:`for_codebook`, which returns None where a grid would need more than ``_MAX_CELLS`` cells.
    The values given must be finite (a NaN has no cell; an infinity is clamped to the first or last).
    """

    def __init__(self, codebook: torch.Tensor, cells: int):
        b = midpoints(codebook.to(torch.float32))
        b64 = b.double().cpu()
        self.lo = float(b[0])
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
        """The grid of a sorted, strictly ascending (L,) codebook, L >= 3; None if it would be too large."""
        b = midpoints(codebook.double())
        gaps = b[1:] - b[:-1]
        cells = max(_MIN_CELLS, math.ceil(_CELLS_PER_GAP * float(b[-1] - b[0]) / float(gaps.min())))
        if cells > _MAX_CELLS:
            return None
        grid = cls(codebook, cells)
        return grid if grid._exact else None

    def _cells(self, v: torch.Tensor) -> torch.Tensor:
        return ((v - self.lo) * self.inv_width).clamp_(0, self.cells - 1).to(torch.int32).view(-1)

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
