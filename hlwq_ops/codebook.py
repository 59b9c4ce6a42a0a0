"""Lloyd-Max codebooks of the standard normal distribution.

The HLWQ rotation makes every coordinate of a normalized weight block close to
N(0, 1), so the MSE-optimal scalar quantizer for N(0, 1) (Lloyd-Max) is the
codebook. It is computed here once per bit width, in float64, with no data and
no scipy: the cell integrals of the normal density have closed forms.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["MIN_BITS", "MAX_BITS", "check_bits", "lloyd_max_gaussian", "codebook", "gaussian_mse"]

MIN_BITS = 2
MAX_BITS = 8

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _pdf(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * t * t) * _INV_SQRT_2PI


def _upper_tail(t: torch.Tensor) -> torch.Tensor:
    # P(X > t), accurate for large t (no 1 - cdf cancellation).
    return torch.special.ndtr(-t)


def _cell_moments(lo: torch.Tensor, hi: torch.Tensor):
    """Zeroth, first and second moments of N(0, 1) restricted to [lo, hi] (lo >= 0)."""
    mass = _upper_tail(lo) - _upper_tail(hi)
    first = _pdf(lo) - _pdf(hi)
    # int t^2 phi = [Phi - t phi]; inf * 0 at hi = inf is taken as 0.
    hi_term = torch.where(torch.isinf(hi), torch.zeros_like(hi), hi * _pdf(hi))
    second = mass + lo * _pdf(lo) - hi_term
    return mass, first, second


def check_bits(bits: int) -> None:
    """Raise ValueError unless ``bits`` is an integer in 2..8 (a symbolic one, which ``torch.compile`` makes of an
    argument, is specialized: the bit width picks the kernels and the packed layout)."""
    if isinstance(bits, torch.SymInt):
        bits = int(bits)
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


def _lloyd_map(c: torch.Tensor):
    """One Lloyd step on the positive half-codebook ``c``, and its Jacobian.

    Returns ``g(c)`` (the conditional means of the cells that the midpoints of
    ``c`` define) and ``dg/dc`` (tridiagonal, returned dense).
    """
    zero = torch.zeros(1, dtype=c.dtype)
    inf = torch.full((1,), math.inf, dtype=c.dtype)
    mid = 0.5 * (c[1:] + c[:-1])
    lo = torch.cat([zero, mid])
    hi = torch.cat([mid, inf])
    mass, first, _ = _cell_moments(lo, hi)
    mean = first / mass
    # d mean / d hi and d mean / d lo of a truncated normal.
    d_hi = torch.where(torch.isinf(hi), torch.zeros_like(hi), _pdf(hi) * (hi - mean) / mass)
    d_lo = _pdf(lo) * (mean - lo) / mass
    d_lo[0] = 0.0  # the first cell starts at the fixed symmetry point 0
    n = c.numel()
    jac = torch.zeros(n, n, dtype=c.dtype)
    idx = torch.arange(n)
    jac[idx, idx] = 0.5 * (d_lo + d_hi)
    jac[idx[1:], idx[:-1]] = 0.5 * d_lo[1:]
    jac[idx[:-1], idx[1:]] = 0.5 * d_hi[:-1]
    return mean, jac


@functools.lru_cache(maxsize=None)
def lloyd_max_gaussian(bits: int) -> tuple[float, ...]:
    """Lloyd-Max centroids of N(0, 1) with ``2**bits`` levels, sorted ascending.

    Solves the Lloyd-Max conditions (each boundary the midpoint of its
    neighbours, each centroid the conditional mean of its cell) on the positive
    half, by Newton's method on ``c = g(c)`` started from half-normal quantiles,
    until no centroid moves by more than 1e-9 (quadratic convergence puts
    the residual near 1e-11, the float64 rounding of the tail integrals;
    float32 needs 1e-7). Deterministic; cached per
    process.

    Args:
        bits: bit width, 2..8.

    Returns:
        The ``2**bits`` centroids as Python floats.
    """
    check_bits(bits)
    half = 2 ** (bits - 1)
    probs = (torch.arange(half, dtype=torch.float64) + 0.5) / half
    c = torch.special.ndtri(0.5 + 0.5 * probs)
    eye = torch.eye(half, dtype=torch.float64)
    for _ in range(100):
        mean, jac = _lloyd_map(c)
        step = torch.linalg.solve(eye - jac, mean - c)
        c = c + step
        if step.abs().max().item() < 1e-9:
            break
    else:
        raise RuntimeError(f"Lloyd-Max for bits={bits} did not converge")
    return tuple((-c.flip(0)).tolist() + c.tolist())


def gaussian_mse(centroids: torch.Tensor) -> float:
    """Exact mean squared error of nearest-centroid quantization of N(0, 1).

    Args:
        centroids: (L,) sorted ascending, symmetric about 0.
    """
    c = centroids.to(torch.float64)
    pos = c[c > 0]
    mid = 0.5 * (pos[1:] + pos[:-1])
    lo = torch.cat([torch.zeros(1, dtype=torch.float64), mid])
    hi = torch.cat([mid, torch.tensor([math.inf], dtype=torch.float64)])
    mass, first, second = _cell_moments(lo, hi)
    return float(2.0 * (second - 2.0 * pos * first + pos * pos * mass).sum())


_DEVICE_CACHE: dict[tuple, torch.Tensor] = {}  # keyed by the device as given, and as a string


def codebook(bits: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The Lloyd-Max codebook for ``bits`` as a tensor, cached per (bits, device, dtype).

    Returns:
        (2**bits,) sorted ascending. Do not modify it in place: it is shared.
    """
    cached = _DEVICE_CACHE.get((bits, device, dtype))  # (every kernel launch asks: no torch.device made then)
    if cached is None:
        key = (bits, str(torch.device(device)), dtype)
        cached = _DEVICE_CACHE.get(key)
        if cached is None:
            cached = _DEVICE_CACHE[key] = torch.tensor(lloyd_max_gaussian(bits), dtype=dtype, device=device)
        _DEVICE_CACHE[(bits, device, dtype)] = cached
    return cached
