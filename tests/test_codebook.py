import math

import pytest
import torch

from hlwq_ops.codebook import codebook, gaussian_mse, lloyd_max_gaussian

KNOWN_MSE = {2: 0.1175, 3: 0.03454, 4: 0.009497, 5: 0.002499}


def _cells(c: torch.Tensor):
    mid = 0.5 * (c[1:] + c[:-1])
    inf = torch.tensor([math.inf], dtype=torch.float64)
    return torch.cat([-inf, mid]), torch.cat([mid, inf])


@pytest.mark.parametrize("bits", range(2, 9))
def test_sorted_and_symmetric(bits):
    c = torch.tensor(lloyd_max_gaussian(bits), dtype=torch.float64)
    assert c.numel() == 2**bits
    assert bool((c[1:] > c[:-1]).all())
    torch.testing.assert_close(c, -c.flip(0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bits", range(2, 9))
def test_centroids_are_conditional_means(bits):
    c = torch.tensor(lloyd_max_gaussian(bits), dtype=torch.float64)
    lo, hi = _cells(c)
    pdf = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
    mass = torch.special.ndtr(hi) - torch.special.ndtr(lo)
    mean = (pdf(lo) - pdf(hi)) / mass
    # The outer cells hold ~1e-5 of the mass at 8 bits: their means lose digits.
    torch.testing.assert_close(mean, c, rtol=0, atol=1e-8)


@pytest.mark.parametrize("bits", range(2, 9))
def test_conditional_means_by_numeric_integration(bits):
    """Independent of the closed forms: integrate the density on a fine grid."""
    c = torch.tensor(lloyd_max_gaussian(bits), dtype=torch.float64)
    t = torch.linspace(-9, 9, 2_000_001, dtype=torch.float64)
    w = torch.exp(-0.5 * t * t)
    cell = torch.bucketize(t, 0.5 * (c[1:] + c[:-1]))
    mass = torch.zeros_like(c).index_add_(0, cell, w)
    first = torch.zeros_like(c).index_add_(0, cell, w * t)
    torch.testing.assert_close(first / mass, c, rtol=0, atol=2e-5)


@pytest.mark.parametrize("bits", range(2, 9))
def test_boundaries_are_midpoints_of_nearest_assignment(bits):
    c = torch.tensor(lloyd_max_gaussian(bits), dtype=torch.float64)
    mid = 0.5 * (c[1:] + c[:-1])
    eps = 1e-9
    left = (mid - eps)[:, None] - c[None, :]
    right = (mid + eps)[:, None] - c[None, :]
    idx = torch.arange(mid.numel())
    assert torch.equal(left.abs().argmin(1), idx)
    assert torch.equal(right.abs().argmin(1), idx + 1)


@pytest.mark.parametrize("bits,expected", KNOWN_MSE.items())
def test_mse_matches_known_values(bits, expected):
    mse = gaussian_mse(torch.tensor(lloyd_max_gaussian(bits)))
    assert abs(mse - expected) / expected < 0.005


def test_mse_by_sampling():
    c = codebook(5)
    x = torch.randn(2_000_000)
    q = c[torch.bucketize(x, 0.5 * (c[1:] + c[:-1]))]
    assert abs((x - q).square().mean().item() / KNOWN_MSE[5] - 1) < 0.02


def test_deterministic_and_cached():
    assert lloyd_max_gaussian(6) is lloyd_max_gaussian(6)
    lloyd_max_gaussian.cache_clear()
    again = lloyd_max_gaussian(6)
    assert again == lloyd_max_gaussian(6)
    assert codebook(4) is codebook(4)


@pytest.mark.parametrize("bits", [1, 9, 0, 5.0, True, "5"])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits must be an integer in 2..8"):
        lloyd_max_gaussian(bits)
