"""The grid search against ``torch.bucketize``, and quantizing with it against the plain search it replaced."""

import math

import pytest
import torch

from hlwq_ops import format as fmt
from hlwq_ops import nearest
from hlwq_ops.codebook import codebook
from hlwq_ops.hadamard import fwht_ref
from hlwq_ops.nearest import CentroidGrid, midpoints

from ._utils import HAS_CUDA


def _hard_values(c: torch.Tensor, grid: CentroidGrid) -> torch.Tensor:
    """Float32 values where a search can go wrong: the midpoints and their neighbouring floats, the grid's cell
    edges and theirs, values far outside the codebook, zeros, subnormals, infinities, and random normals."""
    b = midpoints(c)
    edges = grid.lo + torch.arange(grid.cells + 1, dtype=torch.float64) / grid.inv_width
    exact = torch.cat([b, edges.float()])
    big = torch.tensor([3.0e38, -3.0e38, 1e6, -1e6, 0.0, -0.0, 1e-40, -1e-40, math.inf, -math.inf])
    return torch.cat([
        exact,
        torch.nextafter(exact, torch.tensor(math.inf)),
        torch.nextafter(exact, torch.tensor(-math.inf)),
        big,
        torch.randn(100_000) * 2,
        torch.randn(10_000) * 100,
    ])


@pytest.mark.parametrize("bits", range(2, 9))
def test_grid_is_bucketize(bits):
    c = codebook(bits)
    grid = CentroidGrid.for_codebook(c)
    assert grid is not None
    v = _hard_values(c, grid)
    want = torch.bucketize(v, midpoints(c))
    assert torch.equal(grid.codes(v), want)
    assert torch.equal(grid.centroids(v), c[want])
    v3 = v[: 3 * 4096].view(3, 32, 128)  # shaped as the quantizer's blocks
    assert torch.equal(grid.codes(v3), torch.bucketize(v3, midpoints(c)))


def test_grid_for_a_custom_codebook():
    c = torch.tensor([-3.0, -0.5, -0.1, 0.2, 0.3, 1.0, 2.5, 7.0])
    grid = CentroidGrid.for_codebook(c)
    assert grid is not None
    v = _hard_values(c, grid)
    assert torch.equal(grid.codes(v), torch.bucketize(v, midpoints(c)))


def test_no_grid_for_a_codebook_too_uneven():
    # midpoints 1e-6 apart in a span of 100: more cells than a table may hold
    c = torch.tensor([-100.0, 0.0, 1e-6, 2e-6, 100.0])
    assert CentroidGrid.for_codebook(c) is None


# Finite, strictly ascending codebooks at float32's edges: midpoints that overflow (their sum does), cells narrower
# than float32 resolves. Each gets no grid, or an exact one.
EXTREME_CODEBOOKS = [
    [-3e-38, -1e-38, 1e-38, 3e-38],
    [-4e-45, -2e-45, 2e-45, 4e-45],
    [-3e38, -2e38, 2e38, 3e38],
    [-3.3e38, -1e38, 1.0, 2.0],
]


@pytest.mark.parametrize("values", EXTREME_CODEBOOKS)
def test_grid_at_float32_edges_is_none_or_exact(values):
    c = torch.tensor(values)
    grid = CentroidGrid.for_codebook(c)
    if grid is None:
        return
    v = torch.cat([_hard_values(c, grid), c, torch.nextafter(c, torch.tensor(math.inf))])
    assert torch.equal(grid.codes(v), torch.bucketize(v, midpoints(c)))


def test_grid_inputs():
    c = codebook(4)
    grid = CentroidGrid.for_codebook(c)
    v = torch.randn(64, 48) * 2
    assert torch.equal(grid.codes(v.t()), torch.bucketize(v.t(), midpoints(c)))  # not contiguous
    with pytest.raises(TypeError, match="float32 values, got torch.bfloat16"):
        grid.codes(v.bfloat16())
    assert CentroidGrid.for_codebook(torch.tensor([-1.0, 1.0])) is None


def _search_ref(t, r, c, scale_mode):
    """The search as it was before the grid (session 65): bucketize for every factor, every factor's codes kept."""
    boundaries = midpoints(c)
    safe_r = torch.where(r > 0, r, 1.0)[..., None]
    if scale_mode == "norm":
        return torch.bucketize(t / safe_r, boundaries), r
    best_err = best_codes = best_s = None
    for f in (1.0,) if scale_mode == "lsq" else fmt.SEARCH_FACTORS:
        codes = torch.bucketize(t / (safe_r * f), boundaries)
        chosen = c[codes]
        energy = (chosen * chosen).sum(-1)
        s = torch.where(energy > 0, (t * chosen).sum(-1) / torch.where(energy > 0, energy, 1.0), 0.0)
        err = (t - s[..., None] * chosen).square().sum(-1)
        if best_err is None:
            best_err, best_codes, best_s = err, codes, s
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_codes = torch.where(better[..., None], codes, best_codes)
    return best_codes, best_s


def _rotated(w: torch.Tensor, block_size: int):
    N, K = w.shape
    t = fwht_ref(w.float(), block_size).view(N, K // block_size, block_size) * math.sqrt(block_size)
    return t, t.norm(dim=-1) / math.sqrt(block_size)


def _check_search(device: str, bits: int, scale_mode: str, block_size: int, c=None):
    w = torch.randn(37, 2048, device=device) * torch.rand(37, 1, device=device) * 3
    w[5] = 0
    w[7, :block_size] = 0
    t, r = _rotated(w, block_size)
    c = codebook(bits, torch.device(device)) if c is None else c.to(device)
    codes, s = fmt._codes_and_scale(t, r, c, scale_mode)
    want_codes, want_s = _search_ref(t, r, c, scale_mode)
    assert torch.equal(codes, want_codes)
    assert torch.equal(s, want_s)


@pytest.mark.parametrize("scale_mode", fmt.SCALE_MODES)
@pytest.mark.parametrize("bits", range(2, 9))
def test_search_is_the_plain_search(bits, scale_mode, monkeypatch):
    # about 2.5 rows a chunk: chunks of 2 rows with a last one of 1
    monkeypatch.setattr(fmt, "_CPU_CHUNK_VALUES", 5 * 2048 // 2)
    _check_search("cpu", bits, scale_mode, 128)


@pytest.mark.parametrize("block_size", [32, 1024])
def test_search_is_the_plain_search_at_other_block_sizes(block_size):
    _check_search("cpu", 5, "search", block_size)


def test_search_without_a_grid_is_the_plain_search(monkeypatch):
    monkeypatch.setattr(nearest.CentroidGrid, "for_codebook", classmethod(lambda cls, c: None))
    _check_search("cpu", 4, "search", 128)


def test_search_with_a_custom_codebook():
    _check_search("cpu", 3, "search", 128, c=torch.tensor([-2.0, -1.2, -0.6, -0.1, 0.2, 0.5, 1.1, 2.3]))


@pytest.mark.parametrize("scale_mode", fmt.SCALE_MODES)
@pytest.mark.parametrize("values", EXTREME_CODEBOOKS)
def test_search_with_codebooks_at_float32_edges(values, scale_mode):
    w = torch.randn(6, 256)
    t, r = _rotated(w, 128)
    c = torch.tensor(values)
    codes, s = fmt._codes_and_scale(t, r, c, scale_mode)
    want_codes, want_s = _search_ref(t, r, c, scale_mode)
    assert torch.equal(codes, want_codes)
    torch.testing.assert_close(s, want_s, rtol=0, atol=0, equal_nan=True)


def test_search_codes_come_from_float32_arithmetic():
    """Values whose float32 quotient by a factor lands exactly on a midpoint (bucketize's lower code) where the
    float64 one lands above it: the codes the search returns must be the float32 ones, as its loop saw them."""
    c = codebook(5)
    b = midpoints(c)
    f = fmt.SEARCH_FACTORS[1]
    f32 = torch.tensor(f, dtype=torch.float32)
    candidates = b * f32
    for _ in range(8):  # the floats within 8 of b * f on each side
        candidates = torch.cat([candidates, torch.nextafter(candidates, torch.tensor(math.inf)),
                                torch.nextafter(candidates, torch.tensor(-math.inf))]).unique()
    on_midpoint = torch.isin(candidates / f32, b) & ~torch.isin((candidates.double() / f).float(), b)
    t = candidates[on_midpoint]
    assert len(t) >= 4
    grid = CentroidGrid.for_codebook(c)
    codes, _ = fmt._search(t.view(1, 1, -1), torch.ones(1, 1, 1), grid, (f,))
    assert torch.equal(codes.flatten(), torch.bucketize(t / f32, b))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("bits", [2, 4, 5, 8])
def test_gpu_search_is_the_plain_search(bits):
    # (bucketize on a GPU, where the grid was slower; the search around it is the CPU's)
    _check_search("cuda", bits, "search", 128)
