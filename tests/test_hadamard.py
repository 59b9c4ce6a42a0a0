import pytest
import torch

from hlwq_ops.hadamard import check_block_size, fwht_ref, hadamard_matrix


@pytest.mark.parametrize("n", [1, 2, 4, 32, 128, 1024])
def test_hadamard_orthonormal_symmetric_involution(n):
    h = hadamard_matrix(n, torch.float64)
    torch.testing.assert_close(h, h.t(), rtol=0, atol=0)
    torch.testing.assert_close(h @ h, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)


def test_hadamard_is_sylvester():
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    h = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(5):
        h = torch.kron(h2, h)
    torch.testing.assert_close(hadamard_matrix(32, torch.float64) * 32**0.5, h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block_size", [32, 128, 512])
def test_fwht_ref_matches_matrix(block_size):
    x = torch.randn(3, 5, 4 * block_size, dtype=torch.float64)
    h = hadamard_matrix(block_size, torch.float64)
    ref = (x.view(3, 5, 4, block_size) @ h).view_as(x)
    torch.testing.assert_close(fwht_ref(x, block_size), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(fwht_ref(fwht_ref(x, block_size), block_size), x, rtol=0, atol=1e-12)


def test_fwht_ref_rejects_ragged_last_dim():
    with pytest.raises(ValueError, match="expected a multiple of block_size=128"):
        fwht_ref(torch.randn(2, 200), 128)


@pytest.mark.parametrize("block_size", [0, 16, 100, 2048, 128.0, True])
def test_bad_block_size(block_size):
    with pytest.raises(ValueError, match="block_size must be a power of two in 32..1024"):
        check_block_size(block_size)
