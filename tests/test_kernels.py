"""Triton kernels against their pure-torch references.

On a machine without a GPU these run in the Triton interpreter on CPU tensors
(small shapes); the ``gpu`` tests sweep real shapes on CUDA.
"""

import functools
import json
import math
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from hlwq_ops import format as fmt
from hlwq_ops import kernels
from hlwq_ops.hadamard import fwht_ref, hadamard_matrix
from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.common import planes
from hlwq_ops.kernels.gemv import gemv, gemv_ref
from hlwq_ops.kernels.mma import mma
from hlwq_ops.kernels.tcgemv import tc_gemv, tc_gemv_ref
from hlwq_ops.kernels.wgmma import codebook_asm, lane_table, permute_activations, supports, wgmma

from ._utils import HAS_CUDA, rel_error

KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"


def _packed(N, K, bits, block_size=128, device=KERNEL_DEVICE):
    w = torch.randn(N, K, device=device)
    return fmt.quantize_ref(w, bits, block_size)


def _config(M, **changes):
    config = dict(VEC=1, R=2, ROWS=4, num_warps=2)
    config.update(changes)
    return config


# -- plane geometry ----------------------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
def test_planes_cover_the_code(bits):
    p = planes(bits)
    widths = [p[f"W{i}"] for i in range(3) if p[f"W{i}"]]
    offsets = [p[f"O{i}"] for i in range(3) if p[f"W{i}"]]
    assert sum(widths) == bits and offsets == [sum(widths[:i]) for i in range(len(widths))]
    assert all(32 % w == 0 for w in widths)


# -- GEMV ------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize(
    "M,N,K,block_size,changes",
    [
        (1, 40, 300, 128, {}),  # K padded, N not a multiple of the rows, several K slices
        (3, 17, 256, 128, {"VEC": 4, "R": 4, "ROWS": 8}),  # odd M, one slice wider than K: no workspace
        (5, 33, 96, 32, {"VEC": 2, "R": 1, "ROWS": 1}),  # block 32, a slice spanning blocks
        (2, 45, 300, 128, {"R": 4, "ROWS": 6}),  # rows per program not a multiple of R
        (1, 300, 512, 128, {"R": 8, "ROWS": 136}),  # the reduction of > 128 rows, in chunks
        (1, 20, 4200, 128, {"VEC": 16, "R": 2, "ROWS": 6}),  # warps side by side along K, two slices
        (1, 20, 4200, 128, {"VEC": 16, "R": 2, "ROWS": 6, "WARP_PARTS": 4}),  # a partial per warp, and split-K
        (2, 45, 300, 128, {"R": 4, "ROWS": 6, "WARP_PARTS": 2}),  # parts across a warp's columns, split-K
        (3, 40, 300, 128, {"R": 4, "ROWS": 12, "MB": 2}),  # two activation rows per program, odd M; split-K (4+ bits)
        (2, 20, 4200, 128, {"VEC": 16, "R": 2, "ROWS": 6, "WARP_PARTS": 4, "MB": 2}),
        (3, 20, 4200, 128, {"VEC": 16, "R": 2, "ROWS": 6, "WARP_PARTS": 4, "MB": 2}),  # and a row alone
        (5, 17, 256, 128, {"VEC": 4, "R": 4, "ROWS": 8, "MB": 2}),  # no workspace: bias added per row
        (2, 45, 300, 128, {"R": 4, "ROWS": 6, "EARLY": True}),  # next rows loaded at the loop's top; a partial tile
        (2, 45, 300, 128, {"R": 4, "ROWS": 5, "EARLY": True}),  # ... whose last tile is one row
        (3, 40, 300, 128, {"R": 4, "ROWS": 12, "MB": 2, "EARLY": True}),  # ... with two activation rows
        # ... with a partial per warp and split-K: the large shapes' pick at Q5, M = 1, since session 68
        (1, 20, 4200, 128, {"VEC": 16, "R": 2, "ROWS": 6, "WARP_PARTS": 4, "EARLY": True}),
    ],
)
def test_gemv_matches_reference(bits, M, N, K, block_size, changes):
    qdata, scale = _packed(N, K, bits, block_size)
    k_pad = scale.shape[1] * block_size
    xr = torch.randn(M, k_pad, device=KERNEL_DEVICE)
    bias = torch.randn(N, device=KERNEL_DEVICE)
    y = gemv(xr, qdata, scale, bias, bits, block_size, None, torch.float32, _config(M, **changes))
    ref = gemv_ref(xr, qdata, scale, bias, bits, block_size)
    assert rel_error(y, ref) < 1e-5


@pytest.mark.parametrize("bits", [2, 4, 5, 6, 8])
@pytest.mark.parametrize("M,N,K,split_k", [(3, 40, 300, 1), (20, 70, 256, 1), (20, 70, 640, 3), (1, 40, 640, 3)])
def test_mma_matches_reference(bits, M, N, K, split_k):
    qdata, scale = _packed(N, K, bits)
    k_pad = scale.shape[1] * 128
    xr = torch.randn(M, k_pad, device=KERNEL_DEVICE)
    bias = torch.randn(N, device=KERNEL_DEVICE)
    config = dict(BM=16, BN=32, VEC=1, SPLIT_K=split_k, num_warps=4, num_stages=1)
    y = mma(xr, qdata, scale, bias, bits, 128, None, torch.float32, config)
    ref = gemv_ref(xr, qdata, scale, bias, bits, 128)
    # tf32 products: ~1e-3 relative, the precision of a bfloat16 GEMM
    assert rel_error(y, ref) < 2e-3


def _wgmma_config(BM=16, split_k=1, BN=64, one_dot=True):
    return dict(BM=BM, BN=BN, SPLIT_K=split_k, num_warps=BN // 16, num_stages=1, one_dot=one_dot)


@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "M,N,K,block_size,BM,split_k,BN,one_dot",
    [
        (3, 70, 300, 128, 16, 1, 64, True),  # K padded, N not a multiple of the 64-row tile
        (1, 40, 640, 128, 16, 3, 64, True),  # M = 1, three uneven K slices summed by the last program
        (20, 130, 384, 128, 16, 2, 64, True),  # two M tiles, three row tiles, split-K
        (17, 64, 512, 256, 32, 2, 64, True),  # block 256: two steps per block
        (70, 200, 384, 128, 64, 2, 128, True),  # two warpgroups (128-row tile), two M tiles
        (20, 130, 384, 128, 16, 2, 64, False),  # eight dots per step, norm on the accumulator
        (17, 64, 512, 256, 32, 2, 64, False),
    ],
)
def test_wgmma_matches_reference(bits, dtype, M, N, K, block_size, BM, split_k, BN, one_dot):
    qdata, scale = _packed(N, K, bits, block_size)
    k_pad = scale.shape[1] * block_size
    x16 = torch.randn(M, k_pad, device=KERNEL_DEVICE).to(dtype)
    bias = torch.randn(N, device=KERNEL_DEVICE)
    xp = permute_activations(x16, dtype)
    y = wgmma(xp, qdata, scale, bias, bits, block_size, torch.float32, _wgmma_config(BM, split_k, BN, one_dot))
    ref = gemv_ref(x16.float(), qdata, scale, bias, bits, block_size)
    # the centroids (and with one_dot the norms and products) rounded to the activations' dtype
    assert rel_error(y, ref) < 4 * torch.finfo(dtype).eps
    # exactly the 16-bit weights each step multiplies, up to float32 accumulation
    w16 = _wgmma_weights(qdata, scale, bits, block_size, dtype, one_dot)
    assert rel_error(y, x16.double() @ w16.t() + bias.double()) < 1e-5


def _wgmma_weights(qdata, scale, bits, block_size, dtype, one_dot):
    """(N, K_pad) float64: the weights :func:`wgmma` multiplies -- the centroid rounded to ``dtype``, times the block
    norm in float32 (eight-dot step) or rounded to ``dtype`` and multiplied in ``dtype`` (one-dot step)."""
    from hlwq_ops.codebook import codebook

    c16 = codebook(bits, qdata.device).to(dtype)[fmt.unpack_codes(qdata, bits, block_size)]  # (N, blocks, B)
    norm = scale.float() * torch.tensor(1 / math.sqrt(block_size), dtype=torch.float32)
    if one_dot:
        w = c16 * norm.to(dtype)[..., None]  # one rounding of an exact product, as on the GPU
    else:
        w = c16.double() * norm.double()[..., None]
    return w.double().reshape(qdata.shape[0], -1)


def test_wgmma_supports_only_what_it_decodes():
    assert supports(5, 128, None, torch.bfloat16) and supports(4, 256, None, torch.float16)
    assert not supports(6, 128, None, torch.bfloat16)  # no shuffle lookup above 5 bits
    assert not supports(5, 64, None, torch.bfloat16)  # a step of 16 words would span blocks
    assert not supports(5, 128, torch.zeros(32), torch.bfloat16)  # the codebook is baked into the kernel
    assert not supports(5, 128, None, torch.float32)  # 16-bit register operands only


@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_wgmma_codebook_table_is_the_codebook(bits, dtype):
    from hlwq_ops.codebook import codebook

    table = lane_table(bits, dtype, torch.device("cpu"))
    expected = codebook(bits, torch.device("cpu")).to(dtype)
    assert torch.equal(table.view(dtype), expected[torch.arange(32) % (1 << bits)])
    assert f"add.u64 a, a, {table.data_ptr()};" in codebook_asm(bits, dtype, torch.device("cpu"))  # the address read


# (32, 3): a program transforms whole blocks of 32 but a row holds two, so not as whole reordered rows (ROW_BLOCK)
@pytest.mark.parametrize("block_size,rows", [(128, 3), (256, 3), (128, 1100), (32, 3)])  # 2200 blocks: large tiles
def test_fwht_kernel_writes_the_wgmma_order(block_size, rows):
    from hlwq_ops.hadamard import fwht_ref

    x = torch.randn(rows, 2 * block_size, device=KERNEL_DEVICE).bfloat16()
    out = kernels.fwht(x, block_size, torch.bfloat16, per_word=8)
    expected = permute_activations(fwht_ref(x.float(), block_size), torch.bfloat16)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2 * torch.finfo(torch.bfloat16).eps, atol=1e-6)


def test_permuted_activations_within_blocks():
    """The register-operand ws kernel's order: each block of 128 reordered on its own, ``xp[:, 128 b + 16 a + w] =
    xr[:, 128 b + 8 w + a]``; the FWHT kernel writes it when given ``span=128``; a span that does not tile K (or, for
    the FWHT, is not whole blocks) is refused."""
    xr = torch.arange(2 * 384, dtype=torch.float32).reshape(2, 384)
    xp = permute_activations(xr, torch.float32, span=128)
    b, a, w = 2, 5, 11
    assert xp[1, 128 * b + 16 * a + w] == xr[1, 128 * b + 8 * w + a]
    assert torch.equal(xp[:, 128:256], permute_activations(xr[:, 128:256], torch.float32))
    assert torch.equal(permute_activations(xr, torch.float32, span=384), permute_activations(xr, torch.float32))
    with pytest.raises(ValueError, match="span must divide K_pad"):
        permute_activations(xr, torch.float32, span=256)
    x = torch.randn(3, 384, device=KERNEL_DEVICE).bfloat16()
    out = kernels.fwht(x, 128, torch.bfloat16, per_word=8, span=128)
    expected = permute_activations(fwht_ref(x.float(), 128), torch.bfloat16, span=128)
    torch.testing.assert_close(out.float(), expected.float(), rtol=2 * torch.finfo(torch.bfloat16).eps, atol=1e-6)
    with pytest.raises(ValueError, match="span must be whole blocks"):
        kernels.fwht(x, 128, torch.bfloat16, per_word=8, span=64)


@pytest.mark.parametrize("block_size,rows", [(32, 5), (64, 1050)])  # 2100 blocks of 64: the large tiles
def test_fwht_kernel_writes_whole_reordered_blocks(block_size, rows):
    """With ``span`` one block, a program that transforms whole blocks stores each reordered block as one row
    (``ROW_BLOCK``: wherever a program's columns are a whole block -- B = 32 at any size, from 2048 blocks 16-bit
    blocks up to 128 on a GPU and float32 ones up to 64; here float32 blocks of 32 and 64)."""
    x = torch.randn(rows, 2 * block_size, device=KERNEL_DEVICE)
    out = kernels.fwht(x, block_size, torch.float32, per_word=8, span=block_size)
    expected = permute_activations(fwht_ref(x.double(), block_size), torch.float64, span=block_size)
    assert rel_error(out, expected) < 1e-6


def test_gemv_custom_codebook_and_bf16_output():
    c = torch.linspace(-2, 2, 16, device=KERNEL_DEVICE)
    w = torch.randn(24, 256, device=KERNEL_DEVICE)
    qdata, scale = fmt.quantize_ref(w, 4, 128, codebook=c)
    xr = torch.randn(2, 256, device=KERNEL_DEVICE)
    y = gemv(xr, qdata, scale, None, 4, 128, c, torch.bfloat16, _config(2))
    assert y.dtype == torch.bfloat16
    assert rel_error(y, gemv_ref(xr, qdata, scale, None, 4, 128, c)) < 4e-3


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("bias_dtype", [torch.bfloat16, torch.float32])
def test_gemv_rotates_raw_activations(bits, bias_dtype):
    from hlwq_ops.hadamard import fwht_ref

    qdata, scale = _packed(21, 300, bits)  # K padded to 384, several slices with VEC=1
    x = torch.randn(2, 300, device=KERNEL_DEVICE).bfloat16()
    bias = torch.randn(21, device=KERNEL_DEVICE).to(bias_dtype)
    xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, 84)), 128)
    ref = gemv_ref(xr, qdata, scale, bias, bits, 128)
    for vec in (1, 4, 16):  # several slices (in-kernel reduction), then one slice wider than K (direct store)
        y = gemv(x, qdata, scale, bias, bits, 128, None, torch.float32, _config(2, VEC=vec), rotate=True)
        assert rel_error(y, ref) < 1e-5, vec


@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("parts", [1, 4])
def test_gemv_rotates_with_warps_along_k_and_split_k(bits, parts):
    from hlwq_ops.hadamard import fwht_ref

    qdata, scale = _packed(9, 4200, bits)  # K padded to 4224: two 4096-position slices at VEC = 16
    x = torch.randn(2, 4200, device=KERNEL_DEVICE).bfloat16()
    xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, 24)), 128)
    config = _config(2, VEC=16, R=2, ROWS=4, WARP_PARTS=parts)
    y = gemv(x, qdata, scale, None, bits, 128, None, torch.float32, config, rotate=True)
    assert rel_error(y, gemv_ref(xr, qdata, scale, None, bits, 128)) < 1e-5


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gemv_multiplies_gate_and_up_before_rotating(bits, dtype):
    """With ``glu`` the rows are a gate and an up half, and the kernel's activations ``silu(gate) * up``, each
    rounded to their dtype as torch rounds them: several slices, then VEC = 16 with split K, two rows a program and
    an odd M."""
    from hlwq_ops.hadamard import fwht_ref

    qdata, scale = _packed(21, 300, bits)  # K padded to 384
    x = (3 * torch.randn(3, 600, device=KERNEL_DEVICE)).to(dtype)
    bias = torch.randn(21, device=KERNEL_DEVICE)
    xr = fwht_ref(torch.nn.functional.pad(kernels.silu_and_mul(x, 300).float(), (0, 84)), 128)
    ref = gemv_ref(xr, qdata, scale, bias, bits, 128)
    for config in (_config(3), _config(3, VEC=16, R=2, ROWS=6, WARP_PARTS=4, MB=2)):
        y = gemv(x, qdata, scale, bias, bits, 128, None, torch.float32, config, rotate=True, glu=True)
        assert rel_error(y, ref) < 1e-5, config


def test_gemv_multiplies_gate_and_up_only_where_it_rotates_two_halves():
    qdata, scale = _packed(8, 256, 5)
    with pytest.raises(ValueError, match="gate and an up half only where it rotates .* got rotate=False"):
        gemv(torch.randn(1, 512, device=KERNEL_DEVICE), qdata, scale, None, 5, 128, None, torch.float32, _config(1),
             glu=True)
    with pytest.raises(ValueError, match="a gate and an up half of one width each: got rows of 511"):
        gemv(torch.randn(1, 511, device=KERNEL_DEVICE), qdata, scale, None, 5, 128, None, torch.float32, _config(1),
             rotate=True, glu=True)


@pytest.mark.parametrize("bits", range(2, 9))
def test_gemv_warp_partials_of_one_slice(bits):
    """K in one VEC = 16 slice, every warp's part holding codes: the program sums its own partials (no counter)."""
    from hlwq_ops.kernels.gemv import slice_codes

    K = slice_codes(bits, 16) - 100  # padded within the slice; the last part holds the padding
    qdata, scale = _packed(37, K, bits)
    xr = torch.randn(3, scale.shape[1] * 128, device=KERNEL_DEVICE)
    bias = torch.randn(37, device=KERNEL_DEVICE)
    y = gemv(xr, qdata, scale, bias, bits, 128, None, torch.float32,
             _config(3, VEC=16, R=2, ROWS=10, num_warps=4, WARP_PARTS=4))
    assert rel_error(y, gemv_ref(xr, qdata, scale, bias, bits, 128)) < 1e-5


@pytest.mark.parametrize("parts", [0, 3, 64])
def test_gemv_refuses_warp_parts_that_do_not_split_the_tile(parts):
    qdata, scale = _packed(8, 256, 5)
    x = torch.randn(1, 256, device=KERNEL_DEVICE)
    with pytest.raises(ValueError, match="WARP_PARTS must be a power of two dividing 32 \\* VEC"):
        gemv(x, qdata, scale, None, 5, 128, None, torch.float32, _config(1, VEC=1, WARP_PARTS=parts))


@pytest.mark.parametrize("mb", [0, 3, 4])
def test_gemv_refuses_other_activation_rows_per_program(mb):
    qdata, scale = _packed(8, 256, 5)
    x = torch.randn(2, 256, device=KERNEL_DEVICE)
    with pytest.raises(ValueError, match="MB \\(activation rows per program\\) must be 1 or 2"):
        gemv(x, qdata, scale, None, 5, 128, None, torch.float32, _config(2, MB=mb))


def _group(rows, K, bits, bias, codebooks=False, device=KERNEL_DEVICE):
    """Weights of ``rows`` rows each, as :func:`gemv_group` takes them, and the float64 reference of their outputs
    side by side for raw activations (rotated and padded here)."""
    weights = []
    for i, n in enumerate(rows):
        cb = torch.sort(torch.randn(2**bits, device=device)).values if codebooks and i % 2 else None
        qdata, scale = fmt.quantize_ref(torch.randn(n, K, device=device), bits, 128, codebook=cb)
        weights.append((qdata, scale, torch.randn(n, device=device) if bias else None, cb))

    def reference(x):
        k_pad = weights[0][1].shape[1] * 128
        xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, k_pad - K)), 128)
        return torch.cat([gemv_ref(xr, q, s, b, bits, 128, c) for q, s, b, c in weights], -1)

    return weights, reference


@pytest.mark.parametrize("bits", [4, 5, 7])  # one plane; a gathered second; three planes (offsets moved back)
@pytest.mark.parametrize("rows", [(9, 5), (7, 3, 6), (8, 16, 8)])  # ragged ends of a weight's programs; whole ones
@pytest.mark.parametrize(
    "K,changes",
    [
        (300, {}),  # several slices: split-K's partials and counters over the group's programs
        (256, {"VEC": 4, "R": 4, "ROWS": 8}),  # one slice: stored straight, the bias added per row
        (300, {"R": 4, "ROWS": 6, "MB": 2}),  # two activation rows per program, the second alone at M = 3
        (4200, {"VEC": 16, "R": 2, "ROWS": 6, "WARP_PARTS": 4}),  # a partial per warp, and split-K
        (300, {"R": 4, "ROWS": 5, "EARLY": True}),  # next rows loaded at the loop's top
    ],
)
def test_gemv_group_matches_reference(bits, rows, K, changes):
    """Two or three weights in one launch, each program on one weight's rows: each weight's own codes, scales,
    codebook (every other one custom) and bias, into its own columns."""
    from hlwq_ops.kernels.gemv import gemv_group

    for bias in (False, True):
        weights, reference = _group(rows, K, bits, bias, codebooks=True)
        x = torch.randn(3, K, device=KERNEL_DEVICE).bfloat16()
        y = gemv_group(x, weights, bits, 128, torch.float32, _config(3, **changes))
        assert y.shape == (3, sum(rows))
        assert rel_error(y, reference(x)) < 1e-5, bias


@pytest.mark.parametrize("bias", [False, True])
def test_linear_group_runs_one_launch_at_one_row(monkeypatch, bias):
    """``kernels.linear_group`` at M = 1: one :func:`gemv_group` launch, bit for bit each weight's :func:`gemv` of
    the same config side by side (the same tiles, sums and order per weight); at M = 5, or with biases of two dtypes,
    each weight's own ``kernels.linear``."""
    from hlwq_ops.kernels.gemv import group_plan

    weights, _ = _group((40, 24, 8), 300, 5, bias)
    launches = []
    monkeypatch.setattr(kernels, "group_plan", lambda *a: launches.append(a[-1]) or group_plan(*a))
    x = torch.randn(1, 300, device=KERNEL_DEVICE, dtype=torch.bfloat16)
    y = kernels.linear_group(x, weights, 5, 128, 300)
    (config,) = launches
    expected = torch.cat([gemv(x, q, s, b, 5, 128, c, torch.bfloat16, config, rotate=True) for q, s, b, c in weights],
                         -1)
    assert torch.equal(y, expected)
    others = [(torch.randn(5, 300, device=KERNEL_DEVICE, dtype=torch.bfloat16), weights)]
    if bias:
        others.append((x, [weights[0], (*weights[1][:2], weights[1][2].bfloat16(), None), weights[2]]))
    for x_, ws in others:
        y = kernels.linear_group(x_, ws, 5, 128, 300)
        assert torch.equal(y, torch.cat([kernels.linear(x_, q, s, b, 5, 128, 300, c) for q, s, b, c in ws], -1))
    assert len(launches) == 1


@pytest.mark.parametrize("strided", [False, True])
def test_linear_glu_runs_the_gemv_on_both_halves_at_one_row(monkeypatch, strided):
    """``kernels.linear_glu`` at M = 1: the GEMV multiplying the halves, ``kernels.linear`` of eager's product (bit
    for bit on the CPU: the same config; rows with a stride too, copied first), its call resolved on the first and
    the later calls bit for bit the first; at M = 40 (the tensor-core path) the product first, then
    ``kernels.linear``."""
    from hlwq_ops.kernels import launch as launch_module

    qdata, scale = _packed(40, 300, 5)
    bias = torch.randn(40, device=KERNEL_DEVICE)
    x = 3 * torch.randn(1, 1, 1200 if strided else 600, device=KERNEL_DEVICE, dtype=torch.bfloat16)
    x = x[..., ::2] if strided else x
    launch_module.clear_plans()
    first = kernels.linear_glu(x, qdata, scale, bias, 5, 128, 300, None)
    assert first.shape == (1, 1, 40) and first.dtype == torch.bfloat16
    expected = kernels.linear(kernels.silu_and_mul(x, 300), qdata, scale, bias, 5, 128, 300, None)
    if KERNEL_DEVICE == "cpu":
        assert torch.equal(first, expected)
    else:  # (the GPU's SiLU against torch's may round an element of the product the other way)
        assert rel_error(first, expected) < 1e-2
    (entry,) = [entry for key, entry in kernels._RESOLVED.items() if key[0] == "glu"]
    assert entry.copy_x == strided
    configured = []
    original = kernels._glu_config
    monkeypatch.setattr(kernels, "_glu_config", lambda *a: configured.append(a) or original(*a))
    assert torch.equal(kernels.linear_glu(x, qdata, scale, bias, 5, 128, 300, None), first) and not configured
    many = 3 * torch.randn(40, 600, device=KERNEL_DEVICE, dtype=torch.bfloat16)
    assert torch.equal(kernels.linear_glu(many, qdata, scale, bias, 5, 128, 300, None),
                       kernels.linear(kernels.silu_and_mul(many, 300), qdata, scale, bias, 5, 128, 300, None))


@pytest.mark.parametrize("unit_offset", [False, True])
@pytest.mark.parametrize("bits", [2, 5, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gemv_group_adds_and_normalizes_before_rotating(bits, dtype, unit_offset):
    """With a norm the group's activations are the RMSNorm of the rows plus their residual rows (each product
    rounded to their dtype as torch rounds it; Llama's form and Qwen3.5's, ``1 + weight``, the weight near 0 for the
    latter as its models hold it), and the first row range's programs store that sum: several slices
    (each program summing the whole row's squares), with one row a program and two; then VEC = 16 with one slice, two
    rows a program; an odd M, residual rows of another stride than x's; the sum poisoned first."""
    from hlwq_ops.kernels.gemv import group_plan, launch_group

    weights, reference = _group((21, 10, 7), 300, bits, bias=True, codebooks=True)  # K padded to 384
    x = (3 * torch.randn(3, 300, device=KERNEL_DEVICE)).to(dtype)
    residual = (3 * torch.randn(3, 512, device=KERNEL_DEVICE)).to(dtype)[:, :300]
    weight = (int(not unit_offset) + torch.randn(300, device=KERNEL_DEVICE) / 4).to(dtype)
    normed, expected_h = kernels.add_rms_norm(x, residual, weight, 1e-5, unit_offset)
    ref = reference(normed)
    for config in (_config(3), _config(3, MB=2), _config(3, VEC=16, R=2, ROWS=6, WARP_PARTS=4, MB=2)):
        plan = group_plan(x, weights, bits, 128, config, norm=(1e-5, residual.stride(0), unit_offset))
        h = torch.full_like(x, float("nan"))
        y = launch_group(plan, bits, x, weights, torch.float32, (residual, weight, h))
        assert torch.equal(h, expected_h), config
        assert rel_error(y, ref) < 1e-5, config


def test_gemv_adds_and_normalizes_only_for_a_group_it_rotates_without_glu():
    """The plan's refusals, and a group's launch refuses norm tensors its plan does not take, or none where it
    does."""
    from hlwq_ops.kernels.common import as_words
    from hlwq_ops.kernels.gemv import group_plan, launch_group, plan_for

    qdata, scale = _packed(8, 256, 5)
    x = torch.randn(1, 256, device=KERNEL_DEVICE)
    for ends, rotate, glu in (((), True, False), ((4,), False, False), ((4,), True, True)):
        expected = f"got {len(ends) + 1} weight.s., rotate={rotate}, glu={glu}, traced=False"
        with pytest.raises(ValueError, match=expected):
            plan_for(x, as_words(qdata), scale, None, 5, 128, _config(1), rotate, ends=ends, glu=glu,
                     norm=(1e-6, 256, False))
    weights = [(qdata, scale, None, None)] * 2
    norm = (x, torch.ones(256, device=KERNEL_DEVICE), torch.empty_like(x))
    for plan_norm, given in ((None, norm), ((1e-6, 256, False), ())):
        plan = group_plan(x, weights, 5, 128, _config(1), norm=plan_norm)
        with pytest.raises(ValueError, match=f"plan with a norm: {plan_norm is not None}, got {len(given)} tensor"):
            launch_group(plan, 5, x, weights, torch.float32, given)


@pytest.mark.parametrize("strided", [False, True])
def test_linear_group_norm_runs_the_gemv_at_one_row(monkeypatch, strided):
    """``kernels.linear_group_norm`` at M = 1: the group's GEMV adding and normalizing, ``kernels.linear_group`` of
    eager's norm (the same config; its rows' squares summed in another order) and eager's sum, its call resolved on
    the first and the later calls bit for bit the first; at M = 5 (each weight's own call), and with x strided along
    K (at one row), the norm first, then ``kernels.linear_group``."""
    from hlwq_ops.kernels import launch as launch_module

    weights, _ = _group((40, 24), 300, 5, bias=False)
    x, residual = (3 * torch.randn(1, 1, 300, device=KERNEL_DEVICE, dtype=torch.bfloat16) for _ in range(2))
    weight = (1 + torch.randn(300, device=KERNEL_DEVICE) / 4).bfloat16()
    launch_module.clear_plans()
    first, h = kernels.linear_group_norm(x, residual, weight, 1e-6, weights, 5, 128, 300)
    normed, expected_h = kernels.add_rms_norm(x, residual, weight, 1e-6)
    assert first.shape == (1, 1, 64) and first.dtype == torch.bfloat16 and torch.equal(h, expected_h)
    assert rel_error(first, kernels.linear_group(normed, weights, 5, 128, 300)) < 1e-2
    assert [key[0] for key in kernels._RESOLVED].count("norm") == 1
    configured = []
    original = kernels._group_config
    monkeypatch.setattr(kernels, "_group_config", lambda *a: configured.append(a) or original(*a))
    again, h_again = kernels.linear_group_norm(x, residual, weight, 1e-6, weights, 5, 128, 300)
    assert not configured and torch.equal(again, first) and torch.equal(h_again, h)
    many = [3 * torch.randn(5, 600 if strided else 300, device=KERNEL_DEVICE, dtype=torch.bfloat16) for _ in range(2)]
    if strided:
        many = [m[:1, ::2] for m in many]
    y, h = kernels.linear_group_norm(*many, weight, 1e-6, weights, 5, 128, 300)
    normed, expected_h = kernels.add_rms_norm(*many, weight, 1e-6)
    assert torch.equal(y, kernels.linear_group(normed, weights, 5, 128, 300)) and torch.equal(h, expected_h)
    assert h.is_contiguous() and [key[0] for key in kernels._RESOLVED].count("norm") == 1  # (none for those)
    # Qwen3.5's form of the same shapes resolves a call of its own (not the first's, which would normalize the
    # other way)
    offset, h = kernels.linear_group_norm(x, residual, weight - 1, 1e-6, weights, 5, 128, 300, True)
    normed, expected_h = kernels.add_rms_norm(x, residual, weight - 1, 1e-6, True)
    assert torch.equal(h, expected_h) and rel_error(offset, kernels.linear_group(normed, weights, 5, 128, 300)) < 1e-2
    assert [key[0] for key in kernels._RESOLVED].count("norm") == 2


def test_a_group_call_signature_is_resolved_once(monkeypatch):
    """``kernels.linear_group``'s later calls of a signature launch the plan resolved by the first, without choosing
    a config again: bit for bit what an unresolved call gives, on other activations and on another layer's weights of
    the same layouts; a call that falls back to each weight's call (M = 5) resolves no group."""
    from hlwq_ops.kernels import launch as launch_module

    layer, _ = _group((40, 24, 8), 300, 5, bias=True)
    other_layer, _ = _group((40, 24, 8), 300, 5, bias=True)
    xs = [torch.randn(1, 300, device=KERNEL_DEVICE, dtype=torch.bfloat16) for _ in range(2)]

    def unresolved(x, weights):
        launch_module.clear_plans()
        return kernels.linear_group(x, weights, 5, 128, 300)

    expected = [unresolved(x, w) for x in xs for w in (layer, other_layer)]
    launch_module.clear_plans()
    kernels.linear_group(xs[0], layer, 5, 128, 300)
    assert len(kernels._RESOLVED) == 1
    configured = []
    original = kernels._group_config
    monkeypatch.setattr(kernels, "_group_config", lambda *a: configured.append(a) or original(*a))
    resolved = [kernels.linear_group(x, w, 5, 128, 300) for x in xs for w in (layer, other_layer)]
    assert not configured and all(torch.equal(a, b) for a, b in zip(resolved, expected))
    kernels.linear_group(torch.randn(5, 300, device=KERNEL_DEVICE, dtype=torch.bfloat16), layer, 5, 128, 300)
    assert len(configured) == 1 and all(key[0] != "group" or key[1][0] == 1 for key in kernels._RESOLVED)
    without_bias = [(q, s, None, c) for q, s, _, c in layer]  # (another layout: an entry of its own)
    y = kernels.linear_group(xs[0], without_bias, 5, 128, 300)
    assert len(configured) == 2 and sum(key[0] == "group" for key in kernels._RESOLVED) == 2
    assert torch.equal(y, unresolved(xs[0], without_bias))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("strided", [False, True])
def test_linear_siblings_rotate_once_for_the_calls_that_read_alike(monkeypatch, dtype, strided):
    """``kernels.linear_siblings`` gives each weight's ``kernels.linear`` bit for bit, with one FWHT launch for the
    resolved tensor-core calls that read the same rotation: two wgmma calls share one (the wgmma order), the
    tensor-core GEMV's call gets its own (K order); a weight with its own codebook takes the general kernel, which
    rotates its input itself. The configs are fixed (as if tuned) so that the families are the same on every device;
    ``strided``: activations whose rows are a slice of wider ones (copied before the launches, once)."""
    from hlwq_ops.kernels import launch as launch_module

    weights, _ = _group((40, 24, 8, 16), 256, 5, bias=True)
    weights[3] = (*weights[3][:3], torch.sort(torch.randn(32, device=KERNEL_DEVICE)).values)
    family = {40: "wgmma", 24: "tc", 8: "wgmma", 16: "wgmma"}

    def config_for(kernel, M, N, k_pad, bits, weight, run):  # (kept as the tuner keeps it: resolved calls hold)
        chosen = family[N] if "wgmma" in kernel.split("+") else kernel  # (the general kernel's "mma" as it is)
        config = tuning.candidates(chosen, M, N, k_pad, 132, bits)[0]
        return tuning._TUNED.setdefault(tuning.key_for(kernel, M, N, k_pad, bits, x.device), config)

    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "config_for", config_for)
    launch_module.clear_plans()
    x = torch.randn(8, 384 if strided else 256, device=KERNEL_DEVICE).to(dtype)[:, :256]
    expected = [kernels.linear(x, q, s, b, 5, 128, 256, c) for q, s, b, c in weights]  # (resolved now)
    rotations = []
    launch_fwht = kernels.launch_fwht
    monkeypatch.setattr(kernels, "launch_fwht", lambda *a: rotations.append(a) or launch_fwht(*a))
    y = kernels.linear_siblings(x, weights, 5, 128, 256)
    assert all(torch.equal(a, b) for a, b in zip(y, expected))
    runs = [kernels._RESOLVED[kernels._signature(x, q, s, b, 5, 128, 256, c)].run for q, s, b, c in weights[:3]]
    assert all(isinstance(run, kernels._RotatedLaunches) for run in runs)
    assert kernels._signature(x, *weights[3][:3], 5, 128, 256, weights[3][3]) not in kernels._RESOLVED
    assert len(rotations) == 2


def test_gemv_group_refuses_what_one_launch_cannot_read():
    from hlwq_ops.kernels.gemv import gemv_group

    x = torch.randn(1, 256, device=KERNEL_DEVICE)
    weights, _ = _group((4, 4, 4, 4), 256, 5, bias=False)
    with pytest.raises(ValueError, match="2 to 3 weights, got 4"):
        gemv_group(x, weights, 5, 128, torch.float32, _config(1))
    with pytest.raises(ValueError, match="2 to 3 weights, got 1"):
        gemv_group(x, weights[:1], 5, 128, torch.float32, _config(1))
    empty, _ = _group((0,), 256, 5, bias=False)
    with pytest.raises(ValueError, match=r"at least one row each, got row ends \(4, 4\) of 8"):
        gemv_group(x, [weights[0], empty[0], weights[1]], 5, 128, torch.float32, _config(1))
    wider, _ = _group((4,), 384, 5, bias=False)
    with pytest.raises(ValueError, match="the same width"):
        gemv_group(x, [weights[0], wider[0]], 5, 128, torch.float32, _config(1))
    with_bias, _ = _group((4,), 256, 5, bias=True)
    with pytest.raises(ValueError, match=r"biases of one dtype or none.*\[None, torch.float32\]"):
        gemv_group(x, [weights[0], with_bias[0]], 5, 128, torch.float32, _config(1))
    q, s, _, _ = weights[0]
    wide = torch.cat([s, s], 1)  # scales read with a column stride of 2: copied, so their rows' stride differs
    with pytest.raises(ValueError, match="the same width"):
        gemv_group(x, [(q, wide[:, ::2], None, None), (q, wide[:, :2], None, None)], 5, 128, torch.float32, _config(1))


def test_gemv_refuses_to_rotate_partial_blocks():
    from hlwq_ops.kernels.gemv import can_rotate

    assert can_rotate(5, 128, {"VEC": 1}) and not can_rotate(5, 512, {"VEC": 1})
    qdata, scale = _packed(8, 512, 5, block_size=512)
    with pytest.raises(ValueError, match="rotates only whole blocks"):
        gemv(torch.randn(1, 512, device=KERNEL_DEVICE), qdata, scale, None, 5, 512, None, torch.float32,
             _config(1), rotate=True)


def test_dequant_linear_empty_weight_and_bad_out():
    qdata, scale = _packed(40, 256, 5)
    xr = torch.randn(3, 256, device=KERNEL_DEVICE)
    assert kernels.dequant_linear(xr, qdata[:0], scale[:0], None, 5, 128, None, 1024).shape == (3, 0)
    with pytest.raises(ValueError, match=r"out must be \(40, 256\)"):
        kernels.dequantize_rotated(qdata, scale, 5, 128, None, torch.float32,
                                   out=torch.empty(32, 256, device=KERNEL_DEVICE))


def test_a_gemv_call_signature_is_resolved_once(monkeypatch):
    """kernels.linear's second call of a GEMV signature goes straight to the launch (the same result); another
    signature (a bias, another M, HLWQ_PATH set) or another config chooser resolves again, and clear_plans forgets."""
    from hlwq_ops.kernels import launch as launch_module

    qdata, scale = _packed(40, 300, 5)
    x = torch.randn(1, 300, device=KERNEL_DEVICE).bfloat16()
    launch_module.clear_plans()
    assert not kernels._RESOLVED
    first = kernels.linear(x, qdata, scale, None, 5, 128, 300, None)
    assert len(kernels._RESOLVED) == 1
    chosen = []
    original = tuning.config_for
    monkeypatch.setattr(tuning, "config_for", lambda *args: chosen.append(args[0]) or original(*args))
    assert torch.equal(kernels.linear(x, qdata, scale, None, 5, 128, 300, None), first)
    assert chosen == ["gemv"] and len(kernels._RESOLVED) == 1, "a new chooser resolves the signature again"
    assert torch.equal(kernels.linear(x, qdata, scale, None, 5, 128, 300, None), first) and chosen == ["gemv"]
    xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, 84)), 128)
    bias = torch.randn(40, device=KERNEL_DEVICE).bfloat16()
    y = kernels.linear(x, qdata, scale, bias, 5, 128, 300, None)
    assert rel_error(y, gemv_ref(xr, qdata, scale, bias, 5, 128)) < 1e-2
    assert chosen == ["gemv", "gemv"] and len(kernels._RESOLVED) == 2
    monkeypatch.setenv("HLWQ_PATH", "dequant")  # (forced: not the GEMV, nothing resolved)
    assert rel_error(kernels.linear(x, qdata, scale, None, 5, 128, 300, None), first) < 1e-2
    assert chosen == ["gemv", "gemv"] and len(kernels._RESOLVED) == 2
    monkeypatch.delenv("HLWQ_PATH")
    monkeypatch.setattr(kernels, "_MAX_RESOLVED", 2)  # full: the store starts again
    kernels.linear(x[:, :299], qdata, scale, None, 5, 128, 299, None)
    assert len(kernels._RESOLVED) == 1
    launch_module.clear_plans()
    assert not kernels._RESOLVED


def _recorded_launches(monkeypatch) -> list:
    """Every ``Launch`` from now on recorded instead of run: its kernel, grid, integers, constexprs and options, and
    what each argument is (a tensor's shape, strides and dtype; a descriptor's too, with its box and layout)."""
    from hlwq_ops.kernels import launch as launch_module

    def described(arg):
        if isinstance(arg, launch_module.Tma):
            t = arg.tensor
            return "tma", t.shape, t.stride(), t.dtype, tuple(arg.block), arg.layout
        return arg.shape, arg.stride(), arg.dtype

    launched = []
    monkeypatch.setattr(launch_module.Launch, "__call__", lambda self, *args: launched.append(
        (self.kernel, self.grid, self.ints, self.constexprs, self.options, [described(a) for a in args])))
    return launched


@pytest.mark.parametrize("family,split,dtype,lead", [
    ("wsrs", True, torch.bfloat16, (6,)), ("wsrs", False, torch.float16, (2, 3)),
    ("wsrs", True, torch.bfloat16, (100,)),
    ("tc", True, torch.float16, (5,)), ("tc", False, torch.bfloat16, (2, 4)),
    ("wgmma", True, torch.float16, (40,)), ("wgmma", False, torch.bfloat16, (3,)),
])
def test_a_tensor_core_call_signature_is_resolved_once(monkeypatch, family, split, dtype, lead):
    """On the GPU's tensor-core path (the register-operand ws kernel taken to run here; every launch recorded, not
    run), a resolved call of each resolved family makes the unresolved call's launches -- the FWHT into the
    kernel's order, the kernel (and split K's sum) -- with the same kernels, grids, constants and arguments, and asks
    the tuner nothing."""
    from hlwq_ops.kernels import launch as launch_module

    N, K = 256, 512
    qdata, scale = _packed(N, K, 5, device="cpu")
    bias = torch.randn(N).to(dtype) if split else None
    M = math.prod(lead)
    config = dict(tuning.candidates(family, M, N, K, 132, 5)[0])
    if family == "wsrs":  # both activation orders: boxes of 64 read per-block runs, of 16 whole rows
        config.update(SPLIT_K=2 if split else 1, XBOX=64 if M < 50 else 16)
    elif family == "tc":
        config.update(KB=1, num_warps=2 if split else 4)  # 2 programs along K (4 blocks), or 1
    else:
        config.update(SPLIT_K=2 if split else 1)
    chosen = []
    monkeypatch.setattr(tuning, "config_for", lambda *args: chosen.append(args[0]) or config)
    monkeypatch.setattr(kernels, "_runs_ws", lambda *args: True)
    launched = _recorded_launches(monkeypatch)
    x = torch.randn(*lead, K).to(dtype)
    launch_module.clear_plans()
    y = kernels.linear(x, qdata, scale, bias, 5, 128, K, None)
    assert len(chosen) == 1 and len(kernels._RESOLVED) == 1
    first, launched[:] = list(launched), []
    again = kernels.linear(x, qdata, scale, bias, 5, 128, K, None)
    assert len(chosen) == 1, "a resolved call asks the tuner nothing"
    assert launched == first and len(first) == 2 + (split and family == "wsrs")  # the FWHT, the kernel (, the sum)
    assert again.shape == y.shape == (*lead, N) and again.dtype == dtype
    strided = torch.randn(K, *lead).to(dtype).movedim(0, -1)  # (a stride along K: copied before the FWHT)
    launched[:] = []
    kernels.linear(strided, qdata, scale, bias, 5, 128, K, None)
    first, launched[:] = list(launched), []
    kernels.linear(strided, qdata, scale, bias, 5, 128, K, None)
    assert launched == first and len(kernels._RESOLVED) == 2 and len(chosen) == 2
    padded = kernels.linear(x[..., :500], qdata, scale, bias, 5, 128, 500, None)  # (padded activations: not resolved)
    assert padded.shape == y.shape and len(kernels._RESOLVED) == 2 and len(chosen) == 3


def test_a_call_signature_tells_codes_of_another_alignment_apart():
    """Codes of the same shape, strides and offset whose storage starts at another 16-byte alignment (memory from
    outside torch's allocator) get another signature: the tensor-core families are chosen for aligned codes only."""
    qdata, scale = _packed(64, 256, 5, device="cpu")
    raw = bytearray(qdata.numel() + 32)

    def at(offset):
        return torch.frombuffer(raw, dtype=torch.uint8, count=qdata.numel(), offset=offset).view(qdata.shape)

    start = (16 - at(0).data_ptr() % 16) % 16
    aligned, unaligned = at(start), at(start + 4)
    x = torch.randn(4, 256, dtype=torch.bfloat16)

    def signature(q):
        return kernels._signature(x, q, scale, None, 5, 128, 256, None)

    assert aligned.storage_offset() == unaligned.storage_offset() == 0
    assert signature(aligned) != signature(unaligned) and signature(aligned) == signature(qdata.clone())


def test_a_resolved_gemv_holds_while_the_tuning_table_keeps_its_config(monkeypatch):
    config = {"VEC": 4}
    entry = kernels._Resolved(tuning.config_for, "gemv/40x384/q5/m1", config, None, 300, 40, False)
    monkeypatch.setattr(tuning, "_TUNED", {"gemv/40x384/q5/m1": config})
    assert entry.current()
    monkeypatch.setattr(tuning, "_TUNED", {"gemv/40x384/q5/m1": dict(config)})  # retuned, reloaded: another object
    assert not entry.current()
    monkeypatch.setattr(tuning, "_TUNED", {})
    assert not entry.current()


def test_weights_made_or_loaded_get_the_device_ready(monkeypatch, tmp_path):
    """Every HLWQ weight made -- by __init__ or by torch.load, which skips it -- is handed to note_weight."""
    from hlwq_ops import HLWQTensor

    seen = []
    monkeypatch.setattr(kernels, "note_weight", lambda q, s, bits, block: seen.append((q.shape, bits, block)))
    w = HLWQTensor.from_hp(torch.randn(96, 256), 5)
    assert seen == [((96, 160), 5, 128)]
    torch.save(w, tmp_path / "w.pt")
    loaded = torch.load(tmp_path / "w.pt", weights_only=True)
    assert seen[-1] == ((96, 160), 5, 128) and len(seen) == 2
    assert torch.equal(loaded.qdata, w.qdata) and loaded.codebook is None


def test_tuning_notes_every_wrapper_of_a_weight():
    """nn.Parameter detaches (a new wrapper over the same memory) and the first wrapper dies: the weight is still
    found for tuning, once; freed weights are dropped."""
    import gc

    from hlwq_ops import HLWQTensor

    layers = []
    for _ in range(3):
        w = HLWQTensor.from_hp(torch.randn(104, 256), 5)  # a layout no other test notes
        tuning.remember(w.qdata, w.scale)
        p = torch.nn.Parameter(w, requires_grad=False)
        tuning.remember(p.qdata, p.scale)
        layers.append(p)
        del w
    gc.collect()
    noted = tuning._noted(layers[0].qdata, layers[0].scale)
    assert [q.data_ptr() for q, _ in noted] == [p.qdata.data_ptr() for p in layers[1:]]
    del layers[1], noted
    gc.collect()
    assert [q.data_ptr() for q, _ in tuning._noted(layers[0].qdata, layers[0].scale)] == [layers[1].qdata.data_ptr()]


@pytest.mark.parametrize("chunk_rows", [None, 32, 64, 1])
def test_dequant_linear_in_chunks(chunk_rows):
    """Decoded whole or a chunk of rows at a time (1: the 32-row minimum), bias included: the same product."""
    qdata, scale = _packed(100, 256, 5)
    xr = torch.randn(7, 256, device=KERNEL_DEVICE)
    bias = torch.randn(100, device=KERNEL_DEVICE)
    budget = None if chunk_rows is None else chunk_rows * 256 * 4
    y = kernels.dequant_linear(xr, qdata, scale, bias, 5, 128, None, budget)
    ref = gemv_ref(xr, qdata, scale, bias, 5, 128)
    assert y.shape == (7, 100) and y.is_contiguous()
    assert rel_error(y, ref) < 1e-6


@pytest.mark.parametrize("path", tuning.PATHS)
@pytest.mark.parametrize("block_size", [128, 256])
def test_kernels_linear_every_path(path, block_size, monkeypatch):
    from hlwq_ops.hadamard import fwht_ref

    monkeypatch.setenv("HLWQ_PATH", path)
    qdata, scale = _packed(24, 300, 5, block_size)
    k_pad = scale.shape[1] * block_size
    x = torch.randn(2, 3, 300, device=KERNEL_DEVICE).bfloat16()
    bias = torch.randn(24, device=KERNEL_DEVICE).bfloat16()
    y = kernels.linear(x, qdata, scale, bias, 5, block_size, 300, None)
    xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, k_pad - 300)), block_size).view(6, k_pad)
    ref = gemv_ref(xr, qdata, scale, bias, 5, block_size).view(2, 3, 24)
    assert y.shape == (2, 3, 24) and y.dtype == torch.bfloat16
    assert rel_error(y, ref) < 1e-2  # bfloat16 output


@pytest.mark.parametrize("path", tuning.PATHS)
def test_codes_the_kernels_cannot_read_as_words_are_a_clear_error(path, monkeypatch):
    """Packed codes at a storage offset that is not a multiple of 4 bytes, or column-major, as the raw ops' CPU
    implementations and fakes take them: every path says what the kernels need (it was torch's bare "must be 1 to
    view Byte as Int", or a view that reads the wrong bytes), also after a call with readable codes resolved."""
    monkeypatch.setenv("HLWQ_PATH", path)
    qdata, scale = _packed(24, 256, 5)
    x = torch.randn(3, 256, device=KERNEL_DEVICE)
    kernels.linear(x, qdata, scale, None, 5, 128, 256, None)
    shifted = torch.empty(qdata.numel() + 2, dtype=torch.uint8, device=KERNEL_DEVICE)[2:].view(qdata.shape)
    shifted.copy_(qdata)
    column_major = qdata.t().contiguous().t()
    for codes in shifted, column_major:
        with pytest.raises(ValueError, match=r"read packed codes \(qdata\) as 32-bit words.*got shape \(24, 160\)"):
            kernels.linear(x, codes, scale, None, 5, 128, 256, None)
        with pytest.raises(ValueError, match="as 32-bit words"):
            kernels.dequantize_rotated(codes, scale, 5, 128, None, torch.float32)
    if KERNEL_DEVICE == "cpu":  # codes at an address 4 past 16 bytes resolve the call; 2 past share its signature
        raw = bytearray(qdata.numel() + 32)
        base = (16 - torch.frombuffer(raw, dtype=torch.uint8).data_ptr() % 16) % 16

        def at(offset):
            codes = torch.frombuffer(raw, dtype=torch.uint8, count=qdata.numel(), offset=base + offset)
            return codes.view(qdata.shape).copy_(qdata)

        kernels.linear(x, at(4), scale, None, 5, 128, 256, None)
        signature = kernels._signature(x, at(2), scale, None, 5, 128, 256, None)
        assert signature == kernels._signature(x, at(4), scale, None, 5, 128, 256, None)
        assert path != "gemv" or signature in kernels._RESOLVED  # (the GEMV resolves its calls on the CPU too)
        with pytest.raises(ValueError, match="starting at a multiple of 4 bytes"):
            kernels.linear(x, at(2), scale, None, 5, 128, 256, None)


def test_codes_starting_off_a_word_are_refused():
    """Memory from outside torch's allocator may start at any byte; the view to words does not check that, and a
    GPU's word loads would fault on it (an error that ends the process's CUDA context)."""
    from hlwq_ops.kernels.common import as_words

    raw = bytearray(64)
    codes = torch.frombuffer(raw, dtype=torch.uint8, count=32, offset=(4 - torch.frombuffer(raw, dtype=torch.uint8)
                                                                       .data_ptr() % 4) % 4 + 2).view(2, 16)
    assert codes.storage_offset() == 0 and codes.data_ptr() % 4 == 2
    with pytest.raises(ValueError, match=r"starting at a multiple of 4 bytes.*address 0x"):
        as_words(codes)
    assert as_words(codes.clone()).shape == (2, 4)


def test_split_k_counters_return_to_zero():
    from hlwq_ops.kernels.common import counter_buffer

    qdata, scale = _packed(40, 1024, 5)
    xr = torch.randn(3, 1024, device=KERNEL_DEVICE)
    gemv(xr, qdata, scale, None, 5, 128, None, torch.float32, _config(3))  # 4 slices
    gemv(xr, qdata, scale, None, 5, 128, None, torch.float32, _config(3, MB=2))  # 2 programs along M, one row alone
    mma(xr, qdata, scale, None, 5, 128, None, torch.float32,
        dict(BM=16, BN=32, VEC=1, SPLIT_K=2, num_warps=4, num_stages=1))
    wgmma(permute_activations(xr, torch.bfloat16), qdata, scale, None, 5, 128, torch.float32, _wgmma_config(16, 4))
    assert int(counter_buffer(xr.device).abs().sum()) == 0


@pytest.mark.parametrize("slices", [1, 2, 3, 5])
@pytest.mark.parametrize("with_bias", [False, True])
def test_reduce_split_k_kernel(slices, with_bias):
    """The split-K partials' own sum kernel (after the register-operand ws kernel with split K): every element of an
    [M, N] not a multiple of its block, every remainder of the slices' four-a-round-trip loop, a bias, a 16-bit
    output within a bfloat16 ulp (Triton's interpreter truncates to bfloat16: twice the error of rounding)."""
    from hlwq_ops.kernels.common import reduce_split_k

    M, N = 3, 1500  # 4500 elements: five blocks of 1024, the last part full
    ws = torch.randn(slices, M, N, device=KERNEL_DEVICE)
    bias = torch.randn(N, device=KERNEL_DEVICE).bfloat16() if with_bias else None
    out = torch.full((M, N), float("nan"), device=KERNEL_DEVICE, dtype=torch.bfloat16)
    ref = ws.double().sum(0) + (bias.double() if with_bias else 0)
    assert reduce_split_k(ws, bias, out) is out
    assert torch.isfinite(out).all() and rel_error(out, ref) < torch.finfo(torch.bfloat16).eps


def test_reduce_split_k_refuses_mismatched_buffers():
    from hlwq_ops.kernels.common import reduce_split_k

    out = torch.empty(3, 8)
    with pytest.raises(ValueError, match=r"\(S, 3, 8\), got torch.float32 \(2, 3, 9\)"):
        reduce_split_k(torch.zeros(2, 3, 9), None, out)
    with pytest.raises(ValueError, match="contiguous float32"):
        reduce_split_k(torch.zeros(2, 3, 8, dtype=torch.float16), None, out)
    with pytest.raises(ValueError, match="bias unit-stride of length 8"):
        reduce_split_k(torch.zeros(2, 3, 8), torch.zeros(7), out)


@pytest.mark.parametrize("BM,split_k", [(128, 3), (256, 2), (64, 3), (16, 4), (128, 1), (16, 1)])
def test_ws_rs_sums_split_k_after_the_kernel(monkeypatch, BM, split_k):
    """The register-operand ws kernel (Gluon: no interpreter) with split K leaves its partials to reduce_split_k,
    with the bias, at every BM; without split K it writes the output itself. The kernel is replaced by one that
    writes known partials, so this runs on the CPU."""
    from hlwq_ops.kernels import wsmma, wsrs

    if wsmma.gluon is None:
        pytest.skip("this Triton has no Gluon")
    M, N, K = 200, 256, 1024
    partials = torch.randn(split_k, M, N)

    class FakeKernel:
        def __getitem__(self, grid):
            assert grid == (N // 128, -(-M // BM), split_k)
            def launch(*args, **meta):  # (x, p0, p1, scale, codebook, bias, out, ws, ...)
                assert meta["SPLIT"] == (split_k > 1)
                if meta["SPLIT"]:
                    args[7].copy_(partials)
            return launch

    summed = []
    monkeypatch.setattr(wsrs, "_rs_kernel", FakeKernel())
    monkeypatch.setattr(wsrs, "reduce_split_k",
                        lambda ws, b, o, **kw: summed.append(ws.shape) or reduce_split_k(ws, b, o, **kw))
    from hlwq_ops.kernels.common import reduce_split_k

    bias = torch.randn(N)
    config = dict(BM=BM, SPLIT_K=split_k, QSTAGES=3, XSTAGES=2, XBOX=64, REGS=232, NORM_ACC=BM <= 128)
    xp, qdata = torch.zeros(M, K, dtype=torch.bfloat16), torch.zeros(N, K * 5 // 8, dtype=torch.uint8)
    out = wsrs.ws_rs(xp, qdata, torch.ones(N, K // 128, dtype=torch.float16), bias, 5, 128, torch.float32, config)
    assert summed == ([(split_k, M, N)] if split_k > 1 else [])
    if split_k > 1:
        assert torch.allclose(out, partials.sum(0) + bias, atol=1e-5)


_TC_PATH_CONFIGS = {  # a config of each kernel that the tensor-core path launches behind an FWHT
    "tc": dict(kernel="tc", num_warps=4, KB=2, MG=1, ROWS=16),
    "wgmma": dict(BM=16, BN=64, SPLIT_K=1, num_warps=4, num_stages=1),
    "wsrs-16": dict(kernel="wsrs", BM=16, SPLIT_K=2, QSTAGES=4, XSTAGES=3, XBOX=64, REGS=168),
    "wsrs-256": dict(kernel="wsrs", BM=256, SPLIT_K=2, QSTAGES=4, XSTAGES=2, XBOX=64, REGS=240, NORM_ACC=False),
}


@pytest.mark.parametrize("dependent", [True, False])
@pytest.mark.parametrize("kernel", list(_TC_PATH_CONFIGS))
def test_tensor_core_path_launches_dependent_as_it_says(monkeypatch, kernel, dependent):
    """Where the path says so (kernels.launches_dependent in kernels.linear), the tensor-core path has the FWHT
    rotating the activations launch them early, and the kernel after it launches that way (its PDL constexpr and the
    launch option together), and so does the split-K sum after the register-operand kernel (at BM = 16 and 256);
    where it does not, none of them. Stand-ins for the device's answer, the tuner and the kernels, so this runs on
    the CPU."""
    import importlib

    from hlwq_ops.kernels import tcgemv, wsmma, wsrs

    wgmma_module = importlib.import_module("hlwq_ops.kernels.wgmma")  # (kernels.wgmma is the function)

    if kernel.startswith("wsrs") and wsmma.gluon is None:
        pytest.skip("this Triton has no Gluon")
    M, N, K = 300, 256, 1024
    config = _TC_PATH_CONFIGS[kernel]
    asked, launched, summed = [], [], []

    class FakeKernel:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                launched.append((meta["PDL"], meta.get("launch_pdl", False)))
            return launch

    for module, name in ((tcgemv, "_tc_gemv_kernel"), (wgmma_module, "_wgmma_kernel"), (wsrs, "_rs_kernel")):
        monkeypatch.setattr(module, name, FakeKernel())
        monkeypatch.setattr(module, "pdl", lambda device, default=False: default)  # (a GPU's answer, HLWQ_PDL unset)
    monkeypatch.setattr(wsrs, "reduce_split_k", lambda ws, b, o, dependent=False: summed.append(dependent) or o)
    monkeypatch.setattr(tuning, "config_for", lambda kernel, M, N, k_pad, bits, weight, run: config)

    def activations(per_word, span=None, dependent=False):
        asked.append(dependent)
        return torch.zeros(M, K, dtype=torch.bfloat16)

    qdata, scale = torch.zeros(N, K * 5 // 8, dtype=torch.uint8), torch.ones(N, K // 128, dtype=torch.float16)
    kernels._tensor_core_linear(activations, M, K, qdata, scale, None, 5, 128, torch.float32, ws=True,
                                dependent=dependent)
    assert asked == [dependent] and launched == [(dependent, dependent)]
    assert summed == ([dependent] if kernel.startswith("wsrs") else [])  # (both wsrs configs split K)


def test_dependent_launch_only_on_hopper_and_newer(monkeypatch):
    """Programmatic dependent launch as HLWQ_PDL says (1 everywhere, 0 nowhere), else as the path's default (on for
    the tensor-core path behind its FWHT only), and only on sm_90 and newer; the CPU (the interpreter) never
    launches with it. Any other HLWQ_PDL is refused."""
    from hlwq_ops.kernels import common

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(common, "capability", lambda device: (9, 0))
    monkeypatch.setattr(common, "pdl_requested", functools.cache(common.pdl_requested.__wrapped__))
    monkeypatch.delenv("HLWQ_PDL", raising=False)
    assert not common.pdl(cuda) and common.pdl(cuda, default=True)  # unset: each path's default
    assert kernels.launches_dependent(cuda) and not kernels.launches_dependent(torch.device("cpu"))
    monkeypatch.setenv("HLWQ_PDL", "1")
    assert not common.pdl(cuda)  # read once per process
    common.pdl_requested.cache_clear()
    assert common.pdl(cuda) and common.pdl(cuda, default=False) and kernels.launches_dependent(cuda)
    assert not common.pdl(torch.device("cpu"))
    monkeypatch.setenv("HLWQ_PDL", "0")
    common.pdl_requested.cache_clear()
    assert not common.pdl(cuda, default=True) and not kernels.launches_dependent(cuda)
    monkeypatch.setenv("HLWQ_PDL", "yes")
    common.pdl_requested.cache_clear()
    with pytest.raises(ValueError, match="HLWQ_PDL must be 0 or 1 .* got 'yes'"):
        common.pdl(cuda)
    monkeypatch.setenv("HLWQ_PDL", "1")
    common.pdl_requested.cache_clear()
    assert common.launch_options(False) == {} and common.launch_options(True) == {"launch_pdl": True}
    monkeypatch.setattr(common, "capability", lambda device: (8, 0))
    assert not common.pdl(torch.device("cuda", 0))


def test_split_k_calls_count_in_different_regions(monkeypatch):
    """Kernels that may run at the same time on different streams get disjoint, aligned counter regions;
    the regions wrap around at the end of the buffer."""
    from hlwq_ops.kernels import common

    device = torch.device("meta")  # a device of its own: the real buffers stay untouched
    monkeypatch.setattr(common, "COUNTER_BUFFER", 256)
    monkeypatch.setitem(common._COUNTERS, device, torch.zeros(256, dtype=torch.int32, device=device))
    monkeypatch.setitem(common._CURSOR, device, 0)
    monkeypatch.setattr(common, "_RETIRED", [])
    a, b, c = (common.arrival_counters(device, n) for n in (40, 100, 1))
    starts = [t.storage_offset() for t in (a, b, c)]
    assert starts == [0, 64, 192] and [t.numel() for t in (a, b, c)] == [64, 128, 32]
    assert common.arrival_counters(device, 40).storage_offset() == 0  # 224 + 64 > 256: wraps
    assert common.arrival_counters(device, 300).numel() >= 300  # a larger buffer, from its start
    assert common.counter_buffer(device).numel() >= 300


# -- tensor-core GEMV ----------------------------------------------------------------


def _tc_config(num_warps, KB, MG, ROWS, **changes):
    return dict(num_warps=num_warps, KB=KB, MG=MG, ROWS=ROWS, **changes)


@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize(
    "M,N,K,config",
    [
        (1, 40, 300, _tc_config(2, 1, 1, 16)),  # K padded, N not a multiple of 16, two K programs (split-K)
        (3, 33, 640, _tc_config(2, 2, 1, 32)),  # odd M, five blocks in slices of two: one warp past K
        (11, 20, 256, _tc_config(1, 1, 2, 16)),  # two groups of eight activation rows in one program
        (9, 50, 512, _tc_config(4, 1, 1, 16)),  # one K program of four warps (summed after a barrier), two M ones
        (2, 24, 128, _tc_config(1, 1, 1, 32)),  # one warp covers K: stored straight, with the bias
        (1, 81, 300, _tc_config(2, 1, 1, 48)),  # three 16-row tiles per program, the last one row (the rest past N)
        (3, 33, 640, _tc_config(2, 2, 1, 32, WARP_SUM=True)),  # warps summed in the program: a slice per program
        (11, 40, 256, _tc_config(2, 1, 2, 16, WARP_SUM=True)),  # ... one program covers K: stored straight
        (3, 40, 1024, _tc_config(2, 2, 1, 16)),  # eight blocks, two K programs
        (1, 20, 768, _tc_config(2, 2, 1, 32)),  # a warp wholly past K (six blocks, two programs of four)
    ],
)
def test_tc_gemv_matches_reference(bits, M, N, K, config):
    qdata, scale = _packed(N, K, bits)
    k_pad = scale.shape[1] * 128
    x16 = torch.randn(M, k_pad, device=KERNEL_DEVICE).bfloat16()
    bias = torch.randn(N, device=KERNEL_DEVICE)
    y = tc_gemv(x16, qdata, scale, bias, bits, 128, None, torch.float32, config)
    ref = gemv_ref(x16.float(), qdata, scale, bias, bits, 128)
    assert rel_error(y, ref) < 4 * torch.finfo(torch.bfloat16).eps  # the centroids rounded to bfloat16
    # exactly the bfloat16 centroids times the norms, up to float32 accumulation
    assert rel_error(y, tc_gemv_ref(x16, qdata, scale, bias, bits)) < 1e-5


def test_tc_gemv_custom_codebook_and_bf16_output():
    c = torch.linspace(-2, 2, 32, device=KERNEL_DEVICE)
    w = torch.randn(24, 256, device=KERNEL_DEVICE)
    qdata, scale = fmt.quantize_ref(w, 5, 128, codebook=c)
    x16 = torch.randn(5, 256, device=KERNEL_DEVICE).bfloat16()
    y = tc_gemv(x16, qdata, scale, None, 5, 128, c, torch.bfloat16, _tc_config(2, 1, 1, 16))
    assert y.dtype == torch.bfloat16
    assert rel_error(y, tc_gemv_ref(x16, qdata, scale, None, 5, c)) < 2 * torch.finfo(torch.bfloat16).eps  # output


def test_tc_gemv_refuses_what_it_cannot_read():
    qdata, scale = _packed(16, 256, 5)
    x16 = torch.randn(1, 256, device=KERNEL_DEVICE).bfloat16()
    config = _tc_config(1, 1, 1, 16)
    with pytest.raises(ValueError, match="4/5-bit codes in blocks of 128, got 6 bits"):
        tc_gemv(x16, *_packed(16, 256, 6), None, 6, 128, None, torch.float32, config)
    with pytest.raises(ValueError, match="contiguous bfloat16 activations, got torch.float16"):
        tc_gemv(x16.half(), qdata, scale, None, 5, 128, None, torch.float32, config)
    with pytest.raises(ValueError, match="ROWS must be a multiple of 16"):
        tc_gemv(x16, qdata, scale, None, 5, 128, None, torch.float32, _tc_config(1, 1, 1, 24))
    odd = torch.empty(16, qdata.shape[1] + 4, dtype=torch.uint8, device=KERNEL_DEVICE)[:, 4:]
    odd.copy_(qdata)
    with pytest.raises(ValueError, match="16-byte aligned rows"):
        tc_gemv(x16, odd, scale, None, 5, 128, None, torch.float32, config)


# -- FWHT and dequantization -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block_size,rows", [(128, 3), (64, 40), (32, 17), (128, 1100)])  # 2200 blocks: large tiles
def test_fwht_kernel(dtype, block_size, rows):
    x = torch.randn(rows, 2 * block_size, device=KERNEL_DEVICE).to(dtype)
    h = hadamard_matrix(block_size, torch.float64, KERNEL_DEVICE)
    ref = (x.double().view(rows, 2, block_size) @ h).view(rows, -1)
    out = kernels.fwht(x, block_size, torch.float32)
    # float32 output of exact inputs: the error is float32 rounding, not the input's.
    assert rel_error(out, ref) < 1e-6
    assert kernels.fwht(x, block_size, dtype).dtype == dtype


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_size", [32, 128, 256])  # four blocks per 128-code tile, one, half of one
def test_dequantize_kernel(bits, dtype, block_size):
    qdata, scale = _packed(37, 300, bits, block_size)
    out = kernels.dequantize_rotated(qdata, scale, bits, block_size, None, dtype)
    ref = fmt.dequantize_rotated_ref(qdata, scale, bits, block_size)
    assert out.dtype == dtype and out.shape == ref.shape
    # same products in another order: within two roundings of the dtype
    torch.testing.assert_close(out.float(), ref, rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("path", tuning.PATHS)
def test_linear_rotated_dispatch_paths(path, monkeypatch):
    monkeypatch.setenv("HLWQ_PATH", path)
    qdata, scale = _packed(24, 256, 5)
    xr = torch.randn(2, 3, 256, device=KERNEL_DEVICE)
    y = kernels.linear_rotated(xr, qdata, scale, None, 5, 128, None, torch.float32)
    assert y.shape == (2, 3, 24)
    assert rel_error(y, gemv_ref(xr.view(6, 256), qdata, scale, None, 5, 128).view(2, 3, 24)) < 1e-5


@pytest.mark.parametrize("path", ["gemv", "mma", "dequant"])
def test_strided_scale_bias_codebook(path, monkeypatch):
    """Scales, a bias and a codebook that are views with other strides give the contiguous copies' result (the kernels
    index them as packed: a strided one was read wrong, silently)."""
    monkeypatch.setenv("HLWQ_PATH", path)
    qdata, scale = _packed(24, 256, 5)
    xr = torch.randn(3, 256, device=KERNEL_DEVICE)
    codebook = torch.linspace(-2.0, 2.0, 64, device=KERNEL_DEVICE)[::2]
    bias = torch.randn(48, device=KERNEL_DEVICE)[::2]
    strided_scale = scale.t().contiguous().t()
    assert strided_scale.stride(1) != 1 and not codebook.is_contiguous() and not bias.is_contiguous()
    y = kernels.linear_rotated(xr, qdata, strided_scale, bias, 5, 128, codebook, torch.float32)
    ref = gemv_ref(xr, qdata, scale, bias.contiguous(), 5, 128, codebook.contiguous())
    assert rel_error(y, ref) < 1e-5
    if path == "dequant":
        out = kernels.dequantize_rotated(qdata, strided_scale, 5, 128, codebook, torch.float32)
        torch.testing.assert_close(out, fmt.dequantize_rotated_ref(qdata, scale, 5, 128, codebook.contiguous()))


def test_gemv_refuses_a_grid_past_its_row_limit():
    """More activation rows than the grid's third dimension holds: a clear error, not a failed launch."""
    qdata, scale = _packed(4, 128, 3)
    x = torch.zeros(1, 128, device=KERNEL_DEVICE).expand(65536, 128)  # no memory: one row seen 65536 times
    with pytest.raises(ValueError, match="at most 65535 activation rows per call with MB=1, got M=65536"):
        gemv(x, qdata, scale, None, 3, 128, None, torch.float32, _config(65536))


@pytest.mark.parametrize("text", ["null", "[1, 2]", "42", '{"gemv/x": 5}', '{"gemv/x": {"VEC": 4', ""])
def test_tuning_cache_that_is_not_ours_is_ignored(text, tmp_path, monkeypatch):
    """A cache file holding anything but a JSON object of configs costs a re-tune, not an error on the first call."""
    path = tmp_path / "configs.json"
    path.write_text(text)
    monkeypatch.setattr(tuning, "_cache_file", lambda device: path)
    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "_LOADED", set())
    tuning._load(torch.device("cpu"))
    assert tuning._TUNED == {}


def test_tuning_cache_written_whole(tmp_path, monkeypatch):
    path = tmp_path / "configs.json"
    monkeypatch.setattr(tuning, "_cache_file", lambda device: path)
    monkeypatch.setattr(tuning, "_TUNED", {"cpu:gemv/8x128/q5/m1": {"VEC": 4}})
    tuning._save(torch.device("cpu"))
    assert json.loads(path.read_text()) == {"gemv/8x128/q5/m1": {"VEC": 4}}
    # written aside, then renamed (the lock file stays: removing it would race with a process waiting on it)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs.json", "configs.json.lock"]


def test_tuning_cache_keeps_what_other_processes_saved(tmp_path, monkeypatch):
    """Saving merges into the file as it is now: another process's keys saved since this one read it stay; where
    both tuned a key, this process's choice is written."""
    theirs, ours = tuning.candidates("gemv", 1, 8, 128, 132, 5)[:2]  # (configs of this version: not stale)
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({"gemv/8x128/q5/m1": theirs, "gemv/8x256/q5/m1": ours}))
    monkeypatch.setattr(tuning, "_cache_file", lambda device: path)
    monkeypatch.setattr(tuning, "sm_count", lambda device: 132)
    monkeypatch.setattr(tuning, "_TUNED", {"cpu:gemv/8x128/q5/m1": ours, "cpu:gemv/8x128/q5/m1/tuning_s": 1.5})
    tuning._save(torch.device("cpu"))
    assert json.loads(path.read_text()) == {"gemv/8x128/q5/m1": ours, "gemv/8x128/q5/m1/tuning_s": 1.5,
                                            "gemv/8x256/q5/m1": ours}


def test_tuning_cache_entries_that_are_not_configs_are_dropped(tmp_path, monkeypatch, caplog):
    path = tmp_path / "configs.json"
    good = {"gemv/8x128/q5/m1": tuning.candidates("gemv", 1, 8, 128, 132, 5)[-1], "gemv/8x128/q5/m1/tuning_s": 0.5,
            "wgmma+tc+wsrs/8x128/q5/m2": tuning.candidates("wgmma+tc+wsrs", 2, 8, 128, 132, 5)[-1]}
    bad = {"gemv/a": {}, "gemv/b": {"VEC": [4]}, "gemv/c": {"VEC": None}, "gemv/c/tuning_s": "abc",
           "gemv/d/tuning_s": True}
    path.write_text(json.dumps({**good, **bad}) [:-1] + ', "gemv/e": {"R": NaN}}')
    monkeypatch.setattr(tuning, "_cache_file", lambda device: path)
    monkeypatch.setattr(tuning, "sm_count", lambda device: 132)
    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "_LOADED", set())
    tuning._load(torch.device("cpu"))
    assert tuning._TUNED == {f"cpu:{key}": value for key, value in good.items()}
    assert "6 entries that are not configs or tuning times ignored" in caplog.text and str(path) in caplog.text
    assert "do not take" not in caplog.text


def _stale_variants(config: dict) -> list[dict]:
    """A real candidate made stale: a parameter missing, one added, another kernel named."""
    name = next(iter(config))
    return [{k: v for k, v in config.items() if k != name}, dict(config, FUTURE=1), dict(config, kernel="old")]


@pytest.mark.parametrize("key", ["gemv/40x384/q5/m1", "gemv/4096x4096/q4/m2", "mma/40x384/q3/m16",
                                 "wgmma+tc+wsrs/1024x4096/q5/m16", "gemv+wgmma+tc+wsrs/4096x4096/q5/m2",
                                 "dequant+ws+wsrs/14336x4096/q5/m256"])
def test_a_cached_config_is_current_when_a_candidate_takes_its_parameters(key):
    """Every candidate of a key is current; with a parameter missing or added, or naming another kernel, it is not
    (a cache of an earlier version would fail at launch); nor is a key this version does not make."""
    kernel, shape, bits, bucket = key.split("/")
    N, k_pad = map(int, shape.split("x"))
    configs = tuning.candidates(kernel, int(bucket[1:]), N, k_pad, 132, int(bits[1:]))
    assert all(tuning._current(key, c, 132) for c in configs)
    for M in range(int(bucket[1:]) // 2 + 1, int(bucket[1:])):  # tuned at another M of the bucket, on another GPU
        assert all(tuning._current(key, c, 132) for c in tuning.candidates(kernel, M, N, k_pad, 78, int(bits[1:])))
    assert not any(tuning._current(key, stale, 132) for stale in _stale_variants(configs[0]))
    for other in ("nokernel/40x384/q5/m1", "gemv/40-384/q5/m1", "gemv/40x384/q5", "gemv+old/40x384/q5/m2"):
        assert not tuning._current(other, configs[0], 132)
    with pytest.raises(ValueError, match="no tuning candidates for kernel 'nokernel': expected 'gemv', 'mma'"):
        tuning.candidates("nokernel", 1, 40, 384, 132, 5)
    with pytest.raises(ValueError, match=r"no tuning candidates for kernel 'wgmma\+old': \['old'\] not among"):
        tuning.candidates("wgmma+old", 16, 40, 384, 132, 5)
    assert not tuning._current("tc/8x0/q5/m1", configs[0], 132)  # (a zero shape: no candidates to compare)


def test_stale_cached_configs_are_tuned_again(tmp_path, monkeypatch, caplog):
    """A config with parameters no candidate of its key has is dropped on loading, with a warning, so its key is
    tuned again, and from the file at the next save, with its tuning time; current configs and tuning times stay."""
    current = tuning.candidates("gemv", 1, 40, 384, 132, 5)[0]
    stale = {k: v for k, v in current.items() if k != "VEC"}
    entries = {"gemv/40x384/q5/m1": current, "gemv/40x384/q5/m1/tuning_s": 0.5, "gemv/40x512/q5/m1": stale,
               "gemv/40x512/q5/m1/tuning_s": 0.7}
    path = tmp_path / "configs.json"
    path.write_text(json.dumps(entries))
    monkeypatch.setattr(tuning, "_cache_file", lambda device: path)
    monkeypatch.setattr(tuning, "sm_count", lambda device: 132)
    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "_LOADED", set())
    tuning._load(torch.device("cpu"))
    assert tuning._TUNED == {"cpu:gemv/40x384/q5/m1": current, "cpu:gemv/40x384/q5/m1/tuning_s": 0.5}
    assert "1 configs that this version's kernels do not take (e.g. gemv/40x512/q5/m1" in caplog.text
    assert tuning.tuned("gemv", 1, 40, 512, 5, torch.device("cpu")) is None  # so config_for tunes it
    tuning._save(torch.device("cpu"))  # and the file loses it (else every process would warn again)
    assert json.loads(path.read_text()) == {"gemv/40x384/q5/m1": current, "gemv/40x384/q5/m1/tuning_s": 0.5}


def test_a_tuning_cache_out_of_reach_costs_a_re_tune_and_one_warning(tmp_path, monkeypatch, caplog):
    """A cache path that cannot be read (here a directory) loads nothing; one that cannot be written (below a file)
    warns once a process and leaves no temporary file."""
    monkeypatch.setattr(tuning, "_TUNED", {"cpu:gemv/8x128/q5/m1": {"VEC": 4}})
    monkeypatch.setattr(tuning, "_LOADED", set())
    monkeypatch.setattr(tuning, "_UNWRITABLE", set())
    monkeypatch.setattr(tuning, "_cache_file", lambda device: tmp_path)
    tuning._load(torch.device("cpu"))
    assert tuning._TUNED == {"cpu:gemv/8x128/q5/m1": {"VEC": 4}}
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(tuning, "_cache_file", lambda device: tmp_path / "file" / "configs.json")
    tuning._save(torch.device("cpu"))
    tuning._save(torch.device("cpu"))
    assert caplog.text.count("not written") == 1 and "tuning is not kept" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("value,tunes", [("", True), ("1", True), ("0", False), ("false", None), (" 0", None)])
def test_hlwq_autotune_takes_0_or_1(value, tunes, monkeypatch):
    monkeypatch.setenv("HLWQ_AUTOTUNE", value)
    if tunes is None:
        with pytest.raises(ValueError, match=f"HLWQ_AUTOTUNE must be 0 or 1 \\(or unset: 1\\), got '{value}'"):
            tuning.autotune()
    else:
        assert tuning.autotune() is tunes


def test_the_tuning_cache_directory(monkeypatch, tmp_path):
    """``HLWQ_CACHE_DIR`` unset or empty: ``~/.cache/hlwq_ops``; a leading ``~`` is the home directory."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Some GPU")
    monkeypatch.setattr(tuning, "_TAGS", {})
    monkeypatch.setattr(tuning, "_cache_path", tuning._cache_path.__wrapped__)  # (the memoized one answers once)
    monkeypatch.setenv("HOME", str(tmp_path))
    cache_file = tuning._cache_file
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv("HLWQ_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("HLWQ_CACHE_DIR", value)
        assert cache_file(torch.device("cuda", 0)).parent == tmp_path / ".cache" / "hlwq_ops"
    monkeypatch.setenv("HLWQ_CACHE_DIR", "~/tuning")
    path = cache_file(torch.device("cuda", 0))
    assert path.parent == tmp_path / "tuning" and path.name.startswith("configs-") and "Some_GPU" in path.name
    assert tuning._kernels_fingerprint() in path.name


def test_a_changed_kernel_source_gets_another_cache_file(monkeypatch, tmp_path):
    """The cache file's name carries a digest of the kernels' sources: choices timed by other kernels (a tile that no
    longer pays, a parameter that kept its name but not its meaning) are not read."""
    import shutil

    kernels_dir = Path(tuning.__file__).parent
    copy = tmp_path / "kernels"
    shutil.copytree(kernels_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(tuning, "__file__", str(copy / "tuning.py"))
    fingerprint = tuning._kernels_fingerprint.__wrapped__
    assert fingerprint() == tuning._kernels_fingerprint()  # (the same sources: the same digest)
    (copy / "wsrs.py").write_text((copy / "wsrs.py").read_text().replace("BM", "BN", 1))
    assert fingerprint() != tuning._kernels_fingerprint()


def test_tuned_choices_of_a_layer(monkeypatch):
    """The choices tuned for one layer and M bucket on a device's GPU model, by key less the model; not its tuning
    times, nor other layers', buckets' or GPU models'."""
    tuned = {"cpu:wgmma+tc+wsrs/1024x4096/q5/m16": {"BM": 16}, "cpu:wgmma+tc+wsrs/1024x4096/q5/m16/tuning_s": 1.5,
             "cpu:gemv/1024x4096/q5/m1": {"VEC": 4}, "cpu:wgmma+tc+wsrs/1024x4096/q4/m16": {"BM": 16},
             "cpu:wgmma+tc+wsrs/11024x4096/q5/m16": {"BM": 16}, "Other_GPU:gemv/1024x4096/q5/m1": {"VEC": 2}}
    monkeypatch.setattr(tuning, "_TUNED", tuned)
    assert tuning.tuned_choices(9, 1024, 4096, 5, "cpu") == {"wgmma+tc+wsrs/1024x4096/q5/m16": {"BM": 16}}
    assert tuning.tuned_choices(1, 1024, 4096, 5, "cpu") == {"gemv/1024x4096/q5/m1": {"VEC": 4}}


def test_two_gpu_models_in_a_process_tune_and_save_apart(tmp_path, monkeypatch):
    """With two models of GPU in a process (a model split over an old and a new card) each model's choices are its
    own -- a key tuned on one is untuned on the other -- and each cache file gets its model's entries only, saved
    after both were loaded; two cards of one model share theirs. ``cuda`` without an index is the current card's,
    whichever that is when asked."""
    models = {0: "GPU_A", 1: "GPU_B", 2: "GPU_A"}
    current = [0]
    monkeypatch.setattr(tuning, "_gpu_model", models.__getitem__)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(tuning, "_TAGS", {})
    monkeypatch.setattr(tuning, "_cache_path", tuning._cache_path.__wrapped__)  # (not memoized across tests)
    monkeypatch.setenv("HLWQ_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuning, "sm_count", lambda device: 132)
    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "_LOADED", set())
    (a, b, a2), cuda = (torch.device("cuda", index) for index in models), torch.device("cuda")
    ours, theirs = tuning.candidates("gemv", 1, 8, 128, 132, 5)[:2]
    file_a, file_b = tuning._cache_file(a), tuning._cache_file(b)
    assert file_a == tuning._cache_file(a2) != file_b and "GPU_B" in file_b.name
    file_b.write_text(json.dumps({"gemv/8x256/q5/m1": theirs}))
    assert tuning.tuned("gemv", 1, 8, 128, 5, a) is None
    tuning._TUNED[tuning.key_for("gemv", 1, 8, 128, 5, a)] = ours  # (as config_for keeps a choice)
    assert tuning.tuned("gemv", 1, 8, 256, 5, b) == theirs and tuning.tuned("gemv", 1, 8, 256, 5, a) is None
    assert tuning.tuned("gemv", 1, 8, 128, 5, b) is None and tuning.tuned("gemv", 1, 8, 128, 5, a2) is ours
    tuning._save(a)
    tuning._save(b)
    assert json.loads(file_a.read_text()) == {"gemv/8x128/q5/m1": ours}
    assert json.loads(file_b.read_text()) == {"gemv/8x256/q5/m1": theirs}
    assert tuning.tuned_choices(1, 8, 256, 5, b) == {"gemv/8x256/q5/m1": theirs}
    assert tuning._cache_file(cuda) == file_a and tuning.tuned("gemv", 1, 8, 128, 5, cuda) is ours
    current[0] = 1  # (the current card now GPU_B's: an index-less device follows it)
    assert tuning.tuned("gemv", 1, 8, 256, 5, cuda) == theirs and tuning._cache_file(cuda) == file_b
    tuning._TUNED[tuning.key_for("gemv", 1, 8, 512, 5, cuda)] = ours
    tuning._save(cuda)
    assert json.loads(file_a.read_text()) == {"gemv/8x128/q5/m1": ours}
    assert json.loads(file_b.read_text()) == {"gemv/8x256/q5/m1": theirs, "gemv/8x512/q5/m1": ours}


def test_path_crossovers(monkeypatch):
    monkeypatch.delenv("HLWQ_PATH", raising=False)
    assert [tuning.path_for(M) for M in (1, 4, 5, 64, 65)] == ["gemv", "gemv", "mma", "mma", "dequant"]
    assert [tuning.path_for(M, wgmma=True) for M in (1, 2, 3, 64, 65)] == ["gemv", "mma", "mma", "mma", "dequant"]
    # where the warp-specialized kernel runs, the tuner weighs it against dequantize + cuBLAS at every larger M
    assert [tuning.path_for(M, True, ws=True) for M in (1, 2, 3, 65, 4096)] == ["gemv", "mma", "mma", "mma", "mma"]
    # at M = 2 there it weighs the GEMV too, on layers of at most 4096 x 4096 codes up to M = 8, unless a family is
    # forced
    assert [tuning.gemv_competes(M, 4096, 4096 + 128) for M in (1, 2, 3)] == [False, True, False]
    assert [tuning.gemv_competes(M, 4096, 4096) for M in (1, 2, 3, 8, 9)] == [False, True, True, True, False]
    assert [tuning.gemv_competes(M, 32, 4096) for M in (1, 2, 3, 8, 9)] == [False, True, True, True, False]
    monkeypatch.setenv("HLWQ_PATH", "dequant")
    assert tuning.path_for(4096, True, ws=True) == "dequant" and not tuning.gemv_competes(2, 32, 4096)
    monkeypatch.setenv("HLWQ_PATH", "mma")
    assert tuning.path_for(2, True) == "mma" and not tuning.gemv_competes(8, 32, 4096)


@pytest.mark.parametrize("M", [2, 7])
def test_the_gemv_competes_with_the_tensor_core_kernels_at_few_rows(monkeypatch, M):
    """At M = 2 (and on a small layer up to M = 8) on a layer the tensor-core kernels serve, the GEMV's configs come
    first among the families timed (its favourite stays the untuned default, as when M = 2 was the GEMV's alone), each
    marked with its kernel; a GEMV config picked there runs the GEMV (the same output as the GEMV path forced) and its
    call signature is resolved: the next call asks the tuner nothing."""
    from hlwq_ops.kernels import launch as launch_module

    monkeypatch.delenv("HLWQ_PATH", raising=False)
    configs = tuning.candidates("gemv+wgmma+tc+wsrs", M, 4096, 4096, 132, 5)
    gemv_configs = tuning.candidates("gemv", M, 4096, 4096, 132, 5)
    assert configs[:len(gemv_configs)] == [dict(c, kernel="gemv") for c in gemv_configs]
    assert {c.get("kernel") for c in configs[len(gemv_configs):]} == {None, "tc", "wsrs"}  # (None: wgmma's)
    qdata, scale = _packed(40, 256, 5)
    x = torch.randn(M, 256, device=KERNEL_DEVICE).bfloat16()
    monkeypatch.setenv("HLWQ_PATH", "gemv")
    forced = kernels.linear(x, qdata, scale, None, 5, 128, 256, None)
    monkeypatch.delenv("HLWQ_PATH")
    picked = []

    def config_for(kernel, M, N, k_pad, bits, weight, run):  # the untuned default, as if tuned (on a GPU too)
        picked.append(kernel)
        key = tuning.key_for(kernel, M, N, k_pad, bits, x.device)
        return tuning._TUNED.setdefault(key, tuning.candidates(kernel, M, N, k_pad, 132, bits)[0])

    monkeypatch.setattr(tuning, "_TUNED", {})
    monkeypatch.setattr(tuning, "config_for", config_for)
    monkeypatch.setattr(kernels, "_runs_ws", lambda *args: True)
    launch_module.clear_plans()
    y = kernels.linear(x, qdata, scale, None, 5, 128, 256, None)
    assert picked == ["gemv+wgmma+tc+wsrs"] and torch.equal(y, forced) and len(kernels._RESOLVED) == 1
    assert torch.equal(kernels.linear(x, qdata, scale, None, 5, 128, 256, None), forced) and len(picked) == 1


def test_ws_mma_serves_only_what_it_decodes():
    from hlwq_ops.kernels import wsmma

    assert wsmma.supports(5, 128, None, torch.bfloat16) and wsmma.supports(4, 128, None, torch.float16)
    assert not wsmma.supports(6, 128, None, torch.bfloat16)  # the codebook held one entry per lane: <= 5 bits
    assert not wsmma.supports(5, 256, None, torch.bfloat16)  # a step is one block of 128
    assert not wsmma.supports(5, 128, torch.zeros(32), torch.bfloat16)  # the standard codebook only
    assert not wsmma.supports(5, 128, None, torch.float32)
    assert not wsmma.runs_on(torch.device("cpu"))  # Gluon has no interpreter


@pytest.mark.parametrize("bits", [4, 5])
def test_ws_references_agree(bits):
    """The register-operand kernel's oracle (norms on the blocks' sums, permuted activations) is ``ws_mma_ref`` with
    ``norm_on_sums`` on the activations in K order, exactly; it differs from the ws kernel's (16-bit norms and
    products), and both are the quantized layer to within bfloat16's rounding."""
    from hlwq_ops.kernels import wsmma, wsrs

    qdata, scale = _packed(40, 256, bits)
    x16 = torch.randn(5, 256, device=KERNEL_DEVICE).bfloat16()
    bias = torch.randn(40, device=KERNEL_DEVICE)
    on_sums = wsrs.ws_rs_ref(permute_activations(x16, torch.bfloat16), qdata, scale, bias, bits)
    per_block = permute_activations(x16, torch.bfloat16, span=128)
    assert torch.equal(wsrs.ws_rs_ref(per_block, qdata, scale, bias, bits, span=128), on_sums)
    on_weights = wsmma.ws_mma_ref(x16, qdata, scale, bias, bits)
    assert torch.equal(on_sums, wsmma.ws_mma_ref(x16, qdata, scale, bias, bits, norm_on_sums=True))
    assert not torch.equal(on_sums, on_weights)
    exact = gemv_ref(x16.float(), qdata, scale, bias, bits, 128)
    for ref in (on_sums, on_weights):
        assert rel_error(ref, exact) < 4 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("change,message", [(dict(WSTAGES=1), "WSTAGES must be at least 2"),
                                            (dict(XSTAGES=1), "XSTAGES must be at least 2"),
                                            (dict(BM=192), "BM must be a power of two in 8..256"),
                                            (dict(BM=24), "BM must be a power of two in 8..256"),
                                            (dict(BM=256), "num_warps must be 8 at BM = 256"),
                                            (dict(XSTAGES=8), "more than the 227 KiB"),
                                            (dict(DEC_WARPS=6), "DEC_WARPS 4 or 8 .*, got 4 and 6"),
                                            (dict(DEC_PARTS=3), "DEC_PARTS must be 1, or 2"),
                                            (dict(DEC_PARTS=2, DEC_WARPS=8), "DEC_PARTS must be 1, or 2"),
                                            (dict(DEC_PARTS=2, QSTAGES=3), "an even QSTAGES"),
                                            (dict(BM=256, num_warps=8, DEC_WARPS=8), "4 at BM = 256"),
                                            (dict(STAGGER=1), "STAGGER must be a bool")])
def test_ws_mma_refuses_configs_it_would_hang_on(change, message):
    from hlwq_ops.kernels import wsmma

    config = dict(tuning.candidates("ws", 128, 4096, 4096, 132, 5)[0], **change)
    with pytest.raises(ValueError, match=message):
        wsmma.check_config(config)
    for M in (16, 128, 300):
        for config in tuning.candidates("ws", M, 4096, 4096, 132, 5):
            wsmma.check_config(config)


def test_ws_candidates_fill_the_gpu():
    """One program per SM: split K until the programs about fill the SMs, keeping >= 4 blocks per slice."""
    for M, N, k_pad, split in ((16, 14336, 4096, 1), (128, 4096, 14336, 4), (128, 4096, 4096, 4), (2048, 4096, 4096, 1)):
        configs = tuning.candidates("dequant+ws", M, N, k_pad, 132, 5)
        assert configs[0] == {"kernel": "dequant"}  # the untuned default past M = 64, as without the ws kernel
        assert configs[1]["kernel"] == "ws" and configs[1]["SPLIT_K"] == split, (M, N, k_pad)
        assert configs[1]["BM"] == min(256, max(16, tuning.m_bucket(M)))
        # staggered K order at BM = 256 only; a third activation slot among the BM = 128 candidates
        assert all(c.get("STAGGER", False) == (c["BM"] == 256) for c in configs[1:]), (M, N, k_pad)
        assert any(c["XSTAGES"] == 3 for c in configs[1:]) == (configs[1]["BM"] <= 128), (M, N, k_pad)
        for config in configs[1:]:
            from hlwq_ops.kernels.wsmma import check_config

            check_config(config)
    families = tuning.candidates("wgmma+tc+ws", 8, 4096, 4096, 132, 5)
    assert {c.get("kernel") for c in families} == {None, "tc", "ws"}  # the wgmma configs carry no "kernel"


def test_ws_split_buffers():
    """The ws kernels' split-K buffers: float32 partials per slice and zeroed counters per tile; none for one slice."""
    from hlwq_ops.kernels.wsmma import split_buffers

    out = torch.empty(5, 7, dtype=torch.bfloat16)
    ws, counters = split_buffers(out, (3, 2, 1))
    assert ws is out and counters is out
    ws, counters = split_buffers(out, (3, 2, 4))
    assert ws.shape == (4, 5, 7) and ws.dtype == torch.float32 and ws.device == out.device
    assert counters.dtype == torch.int32 and counters.numel() >= 6 and int(counters.abs().sum()) == 0


def test_ws_rs_candidates_and_configs():
    """The register-operand variant: BM = the M bucket (16..64), split K as the ws kernel's (one program per SM),
    activation boxes of 64 columns (block-local order) and of 16, the first 64 at BM = 16 and 16 at 32 and 64, at
    BM = 16 four consumer warpgroups (rings of even depth) before them, after them where the grid leaves half the SMs
    idle twice the split and (BM = 64) BM = 32, every candidate accepted; in the 128 bucket
    BM = 128 (more registers, 64 first) and in the 256 bucket (M = 129..) BM = 256 (the norms on the weights, one
    accumulator) then 128; configs it could not run or fit refused."""
    from hlwq_ops.kernels.wsrs import activation_span, check_config

    for M, N, k_pad, BM, split in ((3, 14336, 4096, 16, 1), (16, 4096, 14336, 16, 4), (40, 4096, 4096, 64, 4),
                                   (64, 1024, 4096, 64, 8)):
        shipped = 3 if BM == 16 else 2  # (the candidates of any grid; 1024 x 4096 adds more after them, below)
        *four, config, other = tuning.candidates("wsrs", M, N, k_pad, 132, 5)[:shipped]
        assert config["kernel"] == "wsrs" and (config["BM"], config["SPLIT_K"]) == (BM, split), (M, N, k_pad)
        assert (config["XBOX"], activation_span(config)) == ((64, 128) if BM == 16 else (16, None)), config
        assert other == dict(config, XBOX={16: 64, 64: 16}[config["XBOX"]])
        assert config.get("PHASES", 1) == 1 and config["REGS"] == 168
        assert four == ([dict(config, PHASES=2, REGS=120, XSTAGES=4)] if BM == 16 else []), four
        for candidate in [config, other, *four]:
            check_config(candidate)
    assert all(c.get("PHASES", 1) == 1 for c in tuning.candidates("wsrs", 32, 14336, 4096, 132, 5))
    # where the grid leaves half the SMs idle (1024 x 4096: 8 tiles split 8), twice the split (two blocks a slice)
    # after the shipped ones, and at BM = 64 also BM = 32; not where it fills them (4096 x 4096: 32 tiles split 4)
    for M, shipped in ((16, 3), (64, 2)):
        configs = tuning.candidates("wsrs", M, 1024, 4096, 132, 5)
        more = configs[shipped:]
        assert [dict(c, SPLIT_K=8) for c in more[:shipped]] == configs[:shipped], M
        assert [c["SPLIT_K"] for c in more[:shipped]] == [16] * shipped
        assert [(c["BM"], c["SPLIT_K"], c["XBOX"]) for c in more[shipped:]] == ([(32, 8, 16), (32, 8, 64)]
                                                                               if M == 64 else [])
        for candidate in more:
            check_config(candidate)
    assert [c["SPLIT_K"] for c in tuning.candidates("wsrs", 16, 1024, 512, 132, 5)] == [1, 1, 1, 2, 2, 2]
    for M in (16, 64):
        assert len(tuning.candidates("wsrs", M, 4096, 4096, 132, 5)) == (3 if M == 16 else 2)
    assert len(tuning.candidates("wsrs", 100, 1024, 4096, 132, 5)) == 2  # (BM = 128: not measured there)
    config, other = tuning.candidates("wsrs", 100, 14336, 4096, 132, 5)
    assert (config["BM"], config["SPLIT_K"], config["XBOX"], config["REGS"]) == (128, 1, 64, 232)
    assert config.get("NORM_ACC", True) and other == dict(config, XBOX=16)
    big = tuning.candidates("wsrs", 130, 4096, 14336, 132, 5) + tuning.candidates("wsrs", 512, 4096, 14336, 132, 5)
    settings = [(c["BM"], c["SPLIT_K"], c["XBOX"], c.get("NORM_ACC", True)) for c in big]
    assert settings == [(256, 4, 64, False), (128, 2, 64, True), (256, 2, 64, False), (128, 1, 64, True)]
    for candidate in [config, other, *big]:
        check_config(candidate)
    with pytest.raises(ValueError, match="NORM_ACC=True .* needs BM <= 128, got BM = 256"):
        check_config(dict(big[0], NORM_ACC=True))
    config = next(c for c in tuning.candidates("wsrs", 16, 4096, 4096, 132, 5) if c.get("PHASES", 1) == 1)
    for change, message in ((dict(BM=512), "BM must be"), (dict(BM=24), "BM must be"), (dict(XSTAGES=1), "XSTAGES"),
                            (dict(QSTAGES=1), "QSTAGES"), (dict(QSTAGES=22), "shared memory"),
                            (dict(SPLIT_K=0), "SPLIT_K"), (dict(REGS=170), "REGS"), (dict(REGS=300), "REGS"),
                            (dict(XBOX=32), "XBOX"), (dict(NORM_ACC=1), "NORM_ACC must be a bool"),
                            (dict(PHASES=3), "PHASES .* must be 1 or 2, got 3"),
                            (dict(PHASES=2, REGS=128, XSTAGES=4), "got BM = 16, REGS = 128"),
                            (dict(PHASES=2, BM=64, REGS=112, XSTAGES=4), "BM <= 32 .*got BM = 64"),
                            (dict(PHASES=2, REGS=120), "even depth.*QSTAGES = 4, XSTAGES = 3"),
                            (dict(PHASES=2, REGS=120, QSTAGES=3, XSTAGES=4), "even depth.*QSTAGES = 3")):
        with pytest.raises(ValueError, match=message):
            check_config(dict(config, **change))


@pytest.mark.parametrize("rotated", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("M,kernel,config", [(2, "gemv+wgmma+tc+wsrs", dict(kernel="gemv", VEC=4, R=8, ROWS=8,
                                                                            num_warps=4, MB=2)),
                                             (2, "gemv+wgmma+tc+wsrs", dict(kernel="wsrs", BM=8, XBOX=64)),
                                             (5, "gemv+wgmma+tc+wsrs", dict(kernel="gemv", VEC=4, R=8, ROWS=8,
                                                                            num_warps=4, MB=2)),
                                             (5, "gemv+wgmma+tc+wsrs", dict(kernel="tc", num_warps=2, KB=1, MG=1,
                                                                            ROWS=16, WARP_SUM=True)),
                                             (5, "gemv+wgmma+tc+wsrs", dict(kernel="wsrs", BM=8, XBOX=64)),
                                             (16, "wgmma+ws+wsrs", dict(kernel="ws")),
                                             (64, "wgmma+ws+wsrs", dict(kernel="wsrs", BM=64, XBOX=16)),
                                             (65, "dequant+ws+wsrs", dict(kernel="dequant")),
                                             (65, "dequant+ws+wsrs", dict(kernel="ws")),
                                             (65, "dequant+ws+wsrs", dict(kernel="wsrs", BM=256, XBOX=64,
                                                                              NORM_ACC=False)),
                                             (2049, "dequant+ws", dict(kernel="dequant"))])
def test_tensor_core_families_where_the_ws_kernel_runs(M, kernel, config, dtype, rotated, monkeypatch):
    """Where the warp-specialized kernel runs, the tuner weighs it from M = 16 and its register-operand variant up to
    M = 2048, past the wgmma kernel's range dequantize + cuBLAS first (the untuned default), and at M = 2 (on this
    small layer up to M = 8) the GEMV first; whichever config it picks runs its kernel -- the GEMV on the activations as given, the others on bfloat16
    ones (16-byte aligned for the ws kernels): in K order for the ws kernel and the tensor-core GEMV, in the wgmma
    permutation (whole rows or per block, as its config says) for the register-operand variant; with the bias, in
    the activations' dtype, from ``linear`` and ``linear_rotated`` (the register-operand variant launched with PDL
    behind ``linear``'s FWHT only)."""
    from hlwq_ops.hadamard import fwht_ref
    from hlwq_ops.kernels import wsmma, wsrs

    picked, ws_inputs, launched_dependent = [], [], []

    def config_for(kernel, M, N, k_pad, bits, weight, run):
        picked.append(kernel)
        return config

    def ws_mma(xr, qdata, scale, bias, bits, block_size, out_dtype, config):  # the GPU kernel's reference
        ws_inputs.append(xr)
        return wsmma.ws_mma_ref(xr, qdata, scale, bias, bits).to(out_dtype)

    def ws_rs(xp, qdata, scale, bias, bits, block_size, out_dtype, config, dependent=False):  # the same, permuted
        ws_inputs.append(xp)
        launched_dependent.append(dependent)
        return wsrs.ws_rs_ref(xp, qdata, scale, bias, bits, wsrs.activation_span(config),
                              config.get("NORM_ACC", True)).to(out_dtype)

    monkeypatch.setattr(tuning, "config_for", config_for)
    monkeypatch.setattr(kernels, "_runs_ws", lambda *args: True)
    monkeypatch.setattr(kernels, "ws_mma", ws_mma)
    monkeypatch.setattr(kernels, "ws_rs", ws_rs)
    monkeypatch.setattr(kernels, "launches_dependent", lambda device: True)  # (a GPU's default)
    monkeypatch.delenv("HLWQ_PATH", raising=False)
    qdata, scale = _packed(40, 300, 5)
    x = torch.randn(M, 300, device=KERNEL_DEVICE).to(dtype)
    bias = torch.randn(40, device=KERNEL_DEVICE).to(dtype)
    xr = fwht_ref(torch.nn.functional.pad(x.float(), (0, 84)), 128)
    if rotated:
        y = kernels.linear_rotated(xr.to(dtype), qdata, scale, bias, 5, 128, None, dtype)
    else:
        y = kernels.linear(x, qdata, scale, bias, 5, 128, 300, None)
    ref = gemv_ref(xr.to(dtype).float() if rotated else xr, qdata, scale, bias, 5, 128)
    assert picked == [kernel] and y.dtype == dtype
    assert rel_error(y, ref) < 4 * torch.finfo(torch.bfloat16).eps
    if config["kernel"] in ("ws", "wsrs"):
        (xr16,) = ws_inputs
        assert xr16.dtype == torch.bfloat16 and xr16.is_contiguous() and xr16.data_ptr() % 16 == 0
    if config["kernel"] == "wsrs":  # behind linear's FWHT with PDL; linear_rotated has no FWHT to launch behind
        assert launched_dependent == [not rotated]


def test_tuning_skips_candidates_that_do_not_compile(caplog):
    from triton.compiler.errors import CompilationError

    def time_one(config):
        if config["kernel"] == "ws":
            raise CompilationError("src", None, "no such builtin")
        return config["us"]

    configs = [dict(kernel="ws"), dict(kernel="dequant", us=2.0), dict(kernel="wgmma", us=1.0)]
    assert tuning._fastest(configs, time_one, "k") == dict(kernel="wgmma", us=1.0)
    assert "does not compile" in caplog.text and "'kernel': 'ws'" in caplog.text
    with pytest.raises(RuntimeError, match="no candidate ran \\(1 of 1 did not compile\\)"):
        tuning._fastest(configs[:1], time_one, "k")


@pytest.mark.parametrize("second, third", [
    (dict(a=1.5, b=2.5, c=0.8), dict(a=1.0, b=2.0, c=3.5)),  # c fastest in its second timing, a in the third pass
    (dict(a=1.5, b=2.5, c=3.5), dict(a=1.0, b=2.0, c=0.9)),  # c fastest in its third timing, a in the second pass
], ids=["c-second", "c-third"])
def test_tuning_judges_each_candidate_on_its_second_and_third_timings(second, third):
    """In order, in reverse, in order again; the first timing is not judged (in a process's first tuning its first
    candidates' first timings have read fast), the better of the other two is. A candidate that did not compile is
    not tried again."""
    from triton.compiler.errors import CompilationError

    passes, order = [dict(a=5.0, b=0.5, c=3.0), second, third], []

    def time_one(config):
        name = config["name"]
        order.append(name)
        if name == "broken":
            raise CompilationError("src", None, "no such builtin")
        return passes[order.count(name) - 1][name]

    configs = [dict(name=n) for n in ("a", "broken", "b", "c")]
    assert tuning._fastest(configs, time_one, "k") == dict(name="c")  # b's first-pass 0.5 is not judged
    assert order == ["a", "broken", "b", "c", "c", "b", "a", "a", "b", "c"]


def test_forcing_the_tensor_core_path_leaves_dequantize_out(monkeypatch):
    picked = []

    def config_for(kernel, M, N, k_pad, bits, weight, run):
        picked.append(kernel)
        return dict(kernel="dequant")  # never asked for here: the test checks the family list only

    monkeypatch.setattr(tuning, "config_for", config_for)
    monkeypatch.setattr(kernels, "_runs_ws", lambda *args: True)
    monkeypatch.setenv("HLWQ_PATH", "mma")
    qdata, scale = _packed(40, 256, 5)
    kernels.linear(torch.randn(65, 256, device=KERNEL_DEVICE).bfloat16(), qdata, scale, None, 5, 128, 256, None)
    assert picked == ["ws+wsrs"]


_COMPILE_WS = """
import sys, torch, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.jit import mangle_type
from hlwq_ops.kernels import tuning, wsmma

bits = int(sys.argv[1])
# the kernels' other arguments (the register-operand kernel has no arrival counters: its split K is summed after it)
ARGS = dict(s_ptr="*fp16", c_ptr="*fp32", bias_ptr="*bf16", out_ptr="*bf16", ws_ptr="*fp32", count_ptr="*i32",
            M="i32", N="i32", K_PAD="i32", stride_sn="i32")
RS_ARGS = {name: kind for name, kind in ARGS.items() if name != "count_ptr"}
for M, N, K in ((16, 4096, 4096), (128, 4096, 14336), (300, 4096, 4096)):
    configs = tuning.candidates("ws", M, N, K, 132, bits)
    # (the two decoding partitions staggered: no tuner candidate is, but a config may be)
    staggered = [dict(c, STAGGER=True) for c in configs if c.get("DEC_PARTS") == 2]
    for config in [configs[0]] + staggered[:1 if M == 16 else 0]:
        xr = torch.empty(M, K, dtype=torch.bfloat16)
        q = torch.empty(N, K * bits // 8, dtype=torch.uint8)
        x_l, p0_l, p1_l = wsmma._layouts(config["BM"], torch.bfloat16)
        descs = dict(x_desc=TensorDescriptor.from_tensor(xr, [config["BM"], 64], x_l),
                     p0_desc=TensorDescriptor.from_tensor(q.view(torch.int32), [128, 16], p0_l),
                     p1_desc=TensorDescriptor.from_tensor(q.view(torch.int8), [128, 16], p1_l))
        constants = dict(BITS=bits, BN=128, BM=config["BM"], QSTAGES=config["QSTAGES"], WSTAGES=config["WSTAGES"],
                         XSTAGES=config["XSTAGES"], DEC_WARPS=config["DEC_WARPS"], DEC_REGS=config["DEC_REGS"],
                         DEC_PARTS=config.get("DEC_PARTS", 1),
                         HAS_BIAS=True, SPLIT=config["SPLIT_K"] > 1, STAGGER=config.get("STAGGER", False),
                         num_warps=config["num_warps"])
        signature = {name: mangle_type(d) for name, d in descs.items()} | ARGS | dict.fromkeys(constants, "constexpr")
        source = GluonASTSource(wsmma._ws_kernel, signature, constants)
        options = dict(num_warps=config["num_warps"])
        ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]
        assert "wgmma.mma_async" in ptx and "setmaxnreg" in ptx, (M, N, K)
from hlwq_ops.kernels import wsrs
# the register-operand variant: BM = 16 (split K and not; two and four consumer warpgroups) and 32 (split K), 64
# (split K), 128 and 256 (split K and not; at 256 the norms on the weights) and 128 beside it; shared memory within
# its estimate; no spills with four consumer warpgroups (BM = 256 with a bias does spill, a known cost)
for M, N, K in ((5, 4096, 4096), (16, 14336, 4096), (32, 4096, 14336), (64, 4096, 14336), (128, 14336, 4096),
                (512, 4096, 14336)):
    for config in tuning.candidates("wsrs", M, N, K, 132, bits):  # (both activation orders)
        xp = torch.empty(M, K, dtype=torch.bfloat16)
        q = torch.empty(N, K * bits // 8, dtype=torch.uint8)
        _, p0_l, p1_l = wsmma._layouts(64, torch.bfloat16)
        x_l = wsrs._x_layout(config["BM"], config["XBOX"], xp.dtype)
        descs = dict(x_desc=TensorDescriptor.from_tensor(xp, [config["BM"], config["XBOX"]], x_l),
                     p0_desc=TensorDescriptor.from_tensor(q.view(torch.int32), [128, 16], p0_l),
                     p1_desc=TensorDescriptor.from_tensor(q.view(torch.int8), [128, 16], p1_l))
        constants = dict(BITS=bits, BM=config["BM"], QSTAGES=config["QSTAGES"], XSTAGES=config["XSTAGES"],
                         XBOX=config["XBOX"], NORM_ACC=config.get("NORM_ACC", True), REGS=config["REGS"],
                         HAS_BIAS=True, SPLIT=config["SPLIT_K"] > 1, PDL=True, PHASES=config.get("PHASES", 1),
                         num_warps=4)
        signature = ({name: mangle_type(d) for name, d in descs.items()} | RS_ARGS
                     | dict.fromkeys(constants, "constexpr"))
        source = GluonASTSource(wsrs._rs_kernel, signature, constants)
        kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
        ptx = kernel.asm["ptx"]
        assert "wgmma.mma_async" in ptx and "setmaxnreg" in ptx and "griddepcontrol.wait" in ptx, (M, N, K, config)
        assert kernel.metadata.shared <= wsrs.shared_bytes(config), (kernel.metadata.shared, config)
        if config.get("PHASES", 1) == 2:  # 16 consumer warps: their registers must fit (cuobjdump, with Triton)
            assert "STL" not in kernel.asm["sass"], config
print("compiled")
"""


@pytest.mark.parametrize("bits", [4, 5])
def test_ws_kernel_compiles_for_sm90(bits):
    """The Gluon kernels have no interpreter; compiling them for sm_90 (no GPU needed; in a process without
    TRITON_INTERPRET, under which the kernel would be an interpreted function) catches this Triton's API changes:
    the ws kernel's first candidates at M = 16, 128 and 300 (two MMA warpgroups), the register-operand variant's at
    M = 5, 16, 32, 64, 128 and 512 (split K and not; BM 16 to 256; four consumer warpgroups at 16), with a bias."""
    import os
    import subprocess
    import sys

    from hlwq_ops.kernels import wsmma

    if wsmma.gluon is None:
        pytest.skip("this Triton has no Gluon")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE_WS, str(bits)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


def test_forced_path_must_exist(monkeypatch):
    monkeypatch.setenv("HLWQ_PATH", "magic")
    with pytest.raises(ValueError, match="HLWQ_PATH must be one of"):
        tuning.path_for(1)


def test_gemv_candidates_fill_the_gpu():
    from hlwq_ops.kernels.gemv import can_rotate, slice_codes

    for M, N, K in [(1, 1024, 4096), (1, 4096, 14336), (1, 14336, 4096), (8, 4096, 4096)]:
        for bits in (4, 5, 8):
            configs = tuning.candidates("gemv", M, N, K, 132, bits)
            assert not configs[0].get("EARLY")  # the untuned default
            assert all(c not in configs[:i] for i, c in enumerate(configs))  # none timed twice
            for c in configs:
                assert c["ROWS"] % c["R"] == 0 and c["ROWS"] >= c["R"]
                assert can_rotate(bits, 128, c)
                programs = -(-N // c["ROWS"]) * -(-K // slice_codes(bits, c["VEC"])) * -(-M // c.get("MB", 1))
                assert programs >= 132 or c["ROWS"] == c["R"], (M, N, K, bits, c)


# -- GPU sweeps --------------------------------------------------------------------

LLM_SHAPES = [
    (4096, 4096),  # Llama-3-8B q/o, Qwen3.5-9B o
    (1024, 4096),  # Llama-3-8B k/v
    (14336, 4096),  # Llama-3-8B gate/up
    (4096, 14336),  # Llama-3-8B down
    (12288, 4096),  # Qwen3.5-9B gate/up
    (4096, 12288),  # Qwen3.5-9B down
    (8192, 4096),  # Qwen3.5-9B gated q
]


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("N,K", LLM_SHAPES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_linear_sweep(bits, N, K, dtype, monkeypatch):
    monkeypatch.setenv("HLWQ_AUTOTUNE", "0")  # the default configs; tuning is tested below
    gen = torch.Generator(device="cuda").manual_seed(N * 31 + K)
    w = torch.randn(N, K, device="cuda", generator=gen) * 0.02
    qdata, scale = torch.ops.hlwq.quantize(w, bits, 128)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, bits, 128, K, torch.float64)
    for M in list(range(1, 17)) + [40, 600]:
        x = torch.randn(M, K, device="cuda", generator=gen).to(dtype)
        ref = x.double() @ w_hat.t()
        # what bf16 allows: twice the error of a bfloat16 GEMM on the same data
        bf16_err = rel_error(x.bfloat16() @ w_hat.bfloat16().t(), ref)
        y = torch.ops.hlwq.linear(x, qdata, scale, None, bits, 128, K)
        assert y.dtype == dtype
        assert torch.isfinite(y).all()
        assert rel_error(y, ref) <= 2 * bf16_err, (M, rel_error(y, ref), bf16_err)


@pytest.mark.gpu
def test_gpu_timings_share_one_stream():
    """Every timing runs on one side stream per device: torch keeps a cuBLAS workspace for each stream cuBLAS ran on
    (the dequantize + cuBLAS candidate), and each timing used to take a new stream from torch's pool of 32."""
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(256, 512, device="cuda") * 0.02, 5, 128)
    x = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)
    seen = []

    def run(config, q, s):
        seen.append(torch.cuda.current_stream().cuda_stream)
        return kernels.dequant_linear(x, q, s, None, 5, 128, None)

    for _ in range(3):
        tuning._time_over(run, {}, [(qdata, scale)], ms=0.01)
    assert len(set(seen)) == 1 and seen[0] != torch.cuda.current_stream().cuda_stream


@pytest.mark.gpu
def test_gpu_a_tuned_gemv_call_is_resolved_until_retuned(monkeypatch):
    """On the GPU a GEMV signature is resolved only with its tuned config, and a tuning table that no longer holds
    that config (retuned, reloaded) sends the next call back through the tuner; every result the same."""
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(1024, 4096, device="cuda") * 0.02, 5, 128)
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    kernels.launch.clear_plans()
    first = kernels.linear(x, qdata, scale, None, 5, 128, 4096, None)  # tunes
    (entry,) = kernels._RESOLVED.values()
    assert entry.tuning_key in tuning._TUNED and entry.current()
    assert torch.equal(kernels.linear(x, qdata, scale, None, 5, 128, 4096, None), first)
    monkeypatch.setattr(tuning, "_TUNED", {key: dict(value) if isinstance(value, dict) else value
                                           for key, value in tuning._TUNED.items()})
    assert not entry.current()
    assert torch.equal(kernels.linear(x, qdata, scale, None, 5, 128, 4096, None), first)
    (again,) = kernels._RESOLVED.values()
    assert again is not entry and again.current()


@pytest.mark.gpu
@pytest.mark.parametrize("family,M,split,dtype", [
    ("wsrs", 5, 2, torch.bfloat16), ("wsrs", 16, 1, torch.float16), ("wsrs", 128, 2, torch.bfloat16),
    ("tc", 4, None, torch.float16), ("wgmma", 8, 2, torch.bfloat16), ("wgmma", 40, 1, torch.float16),
])
def test_gpu_a_tensor_core_call_resolved_gives_the_same_bits(monkeypatch, family, M, split, dtype):
    """On the GPU a tensor-core call resolved (the tuner's table holding its config) gives the unresolved call's
    output bit for bit, with a bias, split K or not, and that output is the product's."""
    N, K = 1024, 4096
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(N, K, device="cuda") * 0.02, 5, 128)
    bias = torch.randn(N, device="cuda").to(dtype)
    config = dict(tuning.candidates(family, M, N, K, 132, 5)[-1])
    if split is not None:
        config["SPLIT_K"] = split
    monkeypatch.setattr(tuning, "_TUNED", {})

    def config_for(kernel, M, N, k_pad, bits, weight, run):  # (as tuned: the table holds the config)
        tuning._TUNED[tuning.key_for(kernel, M, N, k_pad, bits, x.device)] = config
        return config

    monkeypatch.setattr(tuning, "config_for", config_for)
    x = torch.randn(M, K, device="cuda").to(dtype)
    kernels.launch.clear_plans()
    first = kernels.linear(x, qdata, scale, bias, 5, 128, K, None)
    (entry,) = kernels._RESOLVED.values()
    assert entry.current() and entry.config is config
    for _ in range(2):
        assert torch.equal(kernels.linear(x, qdata, scale, bias, 5, 128, K, None), first)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, 5, 128, K, torch.float64)
    assert rel_error(first, x.double() @ w_hat.t() + bias.double()) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("per_word,span", [(0, None), (8, None), (8, 128)])
def test_gpu_fwht_programs_loop_over_tiles(per_word, span):
    """M = 2047 at K = 4096: 65504 blocks, 1023.5 tiles (the last one half full), so each of at most two programs
    per SM takes several; every element written (the output poisoned first), each order as the kernels read it."""
    x = torch.randn(2047, 4096, device="cuda", dtype=torch.bfloat16)
    torch.full_like(x, float("nan"))  # freed: the output below reuses it
    out = kernels.fwht(x, 128, torch.bfloat16, per_word, span)
    xr = fwht_ref(x.float(), 128)
    expected = permute_activations(xr, torch.bfloat16, span) if per_word else xr.bfloat16()
    torch.testing.assert_close(out.float(), expected.float(), rtol=2 * torch.finfo(torch.bfloat16).eps, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", range(2, 9))
def test_gpu_poisoned_output_fully_written(bits):
    qdata, scale = _packed(1000, 1000, bits, device="cuda")
    for M in (1, 3, 16, 40):
        xr = torch.randn(M, scale.shape[1] * 128, device="cuda")
        ref = gemv_ref(xr, qdata, scale, None, bits, 128)
        extra = [dict(VEC=4, R=4, ROWS=7, num_warps=4), dict(VEC=16, R=2, ROWS=5, num_warps=4)]  # ROWS % R != 0
        extra += [dict(c, EARLY=True) for c in extra]  # ... with the next rows loaded at the loop's top
        for config in tuning.candidates("gemv", M, 1000, xr.shape[1], 132, bits) + extra:
            # NaN in the block the caching allocator hands the output next: unwritten stays NaN
            torch.full((M, 1000), float("nan"), device="cuda")
            out = gemv(xr, qdata, scale, None, bits, 128, None, torch.float32, config)
            assert torch.isfinite(out).all(), config
            assert rel_error(out, ref) < 1e-5, config


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_gemv_on_gate_and_up_every_candidate(bits, dtype):
    """The GEMV multiplying a gate and an up half (Llama-3-8B's down projection, 4096 x 14336, at one row) under every
    candidate of its shape: every output written (poisoned first), the GEMV of torch's ``silu(gate) * up`` (the
    GPU's SiLU against torch's may round an element of it the other way); then ``kernels.linear_glu``, resolved on
    its second call, against ``kernels.linear`` of that product."""
    from hlwq_ops.kernels.gemv import can_rotate

    qdata, scale = _packed(4096, 14336, bits, device="cuda")
    x = 3 * torch.randn(1, 2 * 14336, device="cuda", dtype=dtype)
    product = kernels.silu_and_mul(x, 14336)
    ref = gemv_ref(fwht_ref(product.float(), 128), qdata, scale, None, bits, 128)
    for config in tuning.candidates("gemv", 1, 4096, 14336, 132, bits):
        if not can_rotate(bits, 128, config):
            continue
        for _ in range(2):
            torch.full((1, 4096), float("nan"), device="cuda")  # where the caching allocator hands the output
            out = gemv(x, qdata, scale, None, bits, 128, None, torch.float32, config, rotate=True, glu=True)
            assert torch.isfinite(out).all(), config
            assert rel_error(out, ref) < 1e-4, config
    expected = kernels.linear(product, qdata, scale, None, bits, 128, 14336, None)
    ys = [kernels.linear_glu(x, qdata, scale, None, bits, 128, 14336, None) for _ in range(2)]
    assert any(key[0] == "glu" for key in kernels._RESOLVED)
    assert torch.equal(ys[0], ys[1]) and rel_error(ys[0], expected) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows,unit_offset", [((4096, 1024, 1024), False), ((14336, 14336), False),
                                              ((4096, 1024, 1024), True)])
def test_gpu_gemv_group_norm_every_candidate(bits, dtype, rows, unit_offset):
    """A group adding and normalizing (Llama-3-8B's q, k, v and gate, up, on K = 4096; Qwen3.5's form on the
    first) at one row under every candidate of its rows together: every output written (both poisoned first), the
    sum bit for bit torch's, the outputs the group's on eager's norm (the kernel sums the squares in another order);
    then ``kernels.linear_group_norm``, resolved on its second call."""
    from hlwq_ops.kernels.gemv import can_rotate, group_plan, launch_group

    weights, reference = _group(rows, 4096, bits, bias=False, device="cuda")
    x, residual = (3 * torch.randn(1, 4096, device="cuda", dtype=dtype) for _ in range(2))
    weight = (int(not unit_offset) + torch.randn(4096, device="cuda") / 4).to(dtype)
    normed, expected_h = kernels.add_rms_norm(x, residual, weight, 1e-5, unit_offset)
    ref = reference(normed)
    for config in tuning.candidates("gemv", 1, sum(rows), 4096, 132, bits):
        if not can_rotate(bits, 128, config):
            continue
        plan = group_plan(x, weights, bits, 128, config, norm=(1e-5, 4096, unit_offset))
        for _ in range(2):
            torch.full((1, sum(rows)), float("nan"), device="cuda")  # where the caching allocator hands the output
            h = torch.full_like(x, float("nan"))
            out = launch_group(plan, bits, x, weights, torch.float32, (residual, weight, h))
            assert torch.isfinite(out).all() and torch.equal(h, expected_h), config
            assert rel_error(out, ref) < 1e-2, config
    expected = kernels.linear_group(normed, weights, bits, 128, 4096)
    ys = [kernels.linear_group_norm(x, residual, weight, 1e-5, weights, bits, 128, 4096, unit_offset)
          for _ in range(2)]
    assert any(key[0] == "norm" for key in kernels._RESOLVED)
    assert torch.equal(ys[0][0], ys[1][0]) and torch.equal(ys[0][1], expected_h)
    assert rel_error(ys[0][0], expected) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 4, 5, 8])
@pytest.mark.parametrize("rows,K", [((4096, 1024, 1024), 4096), ((1000, 333), 1000), ((14336, 14336), 4096)])
def test_gpu_gemv_group_every_candidate(bits, rows, K):
    """A group (Llama-3-8B's q, k, v and gate, up; ragged small weights) under every GEMV candidate of its rows
    together and tiles that end inside a weight's programs: every output written (poisoned first), each weight's
    columns right, also on the next calls (the split-K counters reset)."""
    from hlwq_ops.kernels.gemv import can_rotate, gemv_group

    weights, reference = _group(rows, K, bits, bias=True, device="cuda")
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    ref = reference(x)
    k_pad = weights[0][1].shape[1] * 128
    configs = tuning.candidates("gemv", 1, sum(rows), k_pad, 132, bits) + [dict(VEC=4, R=4, ROWS=7, num_warps=4)]
    for config in configs:
        if not can_rotate(bits, 128, config):
            continue
        for _ in range(2):
            torch.full((1, sum(rows)), float("nan"), device="cuda")  # where the caching allocator hands the output
            out = gemv_group(x, weights, bits, 128, torch.float32, config)
            assert torch.isfinite(out).all(), config
            assert rel_error(out, ref) < 1e-5, config


@pytest.mark.gpu
def test_gpu_a_tuned_group_call_is_resolved_with_the_same_bits():
    """On the GPU ``kernels.linear_group``'s call is resolved once the tuner holds the group's config, and the
    resolved calls give the first call's bits, also on another layer's weights of the same layouts."""
    layers = [_group((512, 128, 128), 4096, 5, bias=False, device="cuda")[0] for _ in range(2)]
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    first = []
    for weights in layers:  # (each unresolved; the first tunes)
        kernels.launch.clear_plans()
        first.append(kernels.linear_group(x, weights, 5, 128, 4096))
    (entry,) = [entry for key, entry in kernels._RESOLVED.items() if key[0] == "group"]
    assert entry.tuning_key in tuning._TUNED and entry.current()
    assert all(torch.equal(kernels.linear_group(x, w, 5, 128, 4096), y) for w, y in zip(layers, first))


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [2, 4, 5, 8])
@pytest.mark.parametrize("N,slices", [(1000, 1), (300, 3)])  # one slice (a barrier), and split-K
@pytest.mark.parametrize("VEC", [8, 16])
def test_gpu_gemv_warp_partials(bits, N, slices, VEC):
    """Row sums cut into WARP_PARTS = 4 parts along the tile's columns (a warp's own sum at VEC = 16, half a warp's
    at VEC = 8, where two warps sit along K), stored as partials and summed by the program that sums the row range
    (the program itself with one slice, the last to arrive with three), with one and two activation rows per
    program (MB): every output written, every sum right, on the GPU's memory model (the interpreter runs one
    thread). Every part holds codes; the activations are new for each call, so a partial read before it is written
    (stale) gives a wrong sum."""
    from hlwq_ops.kernels.gemv import slice_codes

    K = slices * slice_codes(bits, VEC) - 100
    qdata, scale = _packed(N, K, bits, device="cuda")
    bias = torch.randn(N, device="cuda")
    for M, MB in ((1, 1), (3, 1), (3, 2)):
        for R, ROWS in ((2, 5), (4, 24), (8, 64)):
            config = dict(VEC=VEC, R=R, ROWS=ROWS, num_warps=4, WARP_PARTS=4, MB=MB)
            for _ in range(3):  # the split-K counters are reset for the next call
                xr = torch.randn(M, scale.shape[1] * 128, device="cuda")
                ref = gemv_ref(xr, qdata, scale, bias, bits, 128)
                torch.full((M, N), float("nan"), device="cuda")  # where the caching allocator hands the output next
                out = gemv(xr, qdata, scale, bias, bits, 128, None, torch.float32, config)
                assert torch.isfinite(out).all(), config
                assert rel_error(out, ref) < 1e-5, config


@pytest.mark.gpu
def test_gpu_split_k_on_two_streams_at_once():
    """Two split-K GEMVs in flight together on two streams count their slices in different places."""
    weights = [_packed(2000, 4096, 5, device="cuda") for _ in range(2)]
    x = torch.randn(1, 4096, device="cuda")
    config = dict(VEC=4, R=8, ROWS=16, num_warps=4)  # 4 slices, 125 row ranges: split-K
    refs = [gemv_ref(x, q, s, None, 5, 128) for q, s in weights]
    streams = [torch.cuda.Stream() for _ in weights]
    outs = [[], []]
    torch.cuda.synchronize()
    for _ in range(50):
        for i, ((q, s), stream) in enumerate(zip(weights, streams)):
            with torch.cuda.stream(stream):
                outs[i].append(gemv(x, q, s, None, 5, 128, None, torch.float32, config))
    torch.cuda.synchronize()
    for i in range(2):
        assert max(rel_error(y, refs[i]) for y in outs[i]) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
def test_gpu_wgmma_poisoned_output_every_candidate(bits):
    from hlwq_ops.kernels.common import counter_buffer

    qdata, scale = _packed(1000, 1000, bits, device="cuda")
    for M in (2, 16, 40, 100):
        x16 = torch.randn(M, scale.shape[1] * 128, device="cuda").bfloat16()
        ref = gemv_ref(x16.float(), qdata, scale, None, bits, 128)
        for config in tuning.candidates("wgmma", M, 1000, x16.shape[1], 132, bits):
            torch.full((M, 1000), float("nan"), device="cuda")
            out = wgmma(permute_activations(x16, torch.bfloat16), qdata, scale, None, bits, 128, torch.float32, config)
            assert torch.isfinite(out).all(), config
            assert rel_error(out, ref) < 4 * torch.finfo(torch.bfloat16).eps, config
    assert int(counter_buffer(qdata.device).abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("N,K", [(1000, 1000), (4096, 14336), (14336, 4096)])
def test_gpu_tc_gemv_poisoned_output_every_candidate(bits, N, K):
    """The tensor-core GEMV on the GPU (its MMAs and shuffles are inline PTX the interpreter only emulates): every
    candidate of the tuner and a few other tiles, M = 1..16, each output written and right."""
    from hlwq_ops.kernels.common import counter_buffer

    qdata, scale = _packed(N, K, bits, device="cuda")
    k_pad = scale.shape[1] * 128
    for M in (1, 2, 3, 5, 8, 9, 16):
        x16 = torch.randn(M, k_pad, device="cuda").bfloat16()
        bias = torch.randn(N, device="cuda")
        ref = tc_gemv_ref(x16, qdata, scale, bias, bits)
        configs = [c for c in tuning.candidates("wgmma+tc", min(M, 8), N, k_pad, 132, bits) if c.get("kernel")]
        configs += [_tc_config(8, 1, 1, 48), _tc_config(4, 4, 1, 16, WARP_SUM=True), _tc_config(2, 1, 2, 32)]
        if K <= 1024:  # one program's warps cover K: stored straight, per thread or after the warps' sum
            configs += [_tc_config(1, 8, 1, 32), _tc_config(2, 4, 1, 32, WARP_SUM=True)]
        for config in configs:
            config = dict(config, MG=2 if M > 8 else config["MG"])
            for out_dtype in (torch.float32, torch.bfloat16) if M in (3, 9) else (torch.float32,):
                torch.full((M, N), float("nan"), device="cuda")
                out = tc_gemv(x16, qdata, scale, bias, bits, 128, None, out_dtype, config)
                assert out.dtype == out_dtype and torch.isfinite(out).all(), (M, config)
                # the bfloat16 centroids, float32 sums (and the output's rounding)
                tolerance = 1e-5 if out_dtype == torch.float32 else 2 * torch.finfo(out_dtype).eps
                assert rel_error(out, ref) < tolerance, (M, config, out_dtype)
    assert int(counter_buffer(qdata.device).abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("N,K", [(1000, 1000), (300, 4096), (4096, 4096)])
def test_gpu_ws_mma_poisoned_output_every_candidate(bits, N, K):
    """The warp-specialized kernel (Gluon, GPU only): every candidate of the tuner and other ring depths, M tiles
    cut short, split K (uneven and empty slices too), each program starting at its own block (STAGGER) or not
    (with one and two decoding partitions), a bias, float32 and bfloat16 outputs, each output written and right."""
    from hlwq_ops.kernels import wsmma
    from hlwq_ops.kernels.common import counter_buffer

    if not wsmma.runs_on(torch.device("cuda")):
        pytest.skip("the warp-specialized kernel needs sm_90 and Gluon")
    qdata, scale = _packed(N, K, bits, device="cuda")
    k_pad = scale.shape[1] * 128
    bias = torch.randn(N, device="cuda")
    for M in (16, 37, 100, 300):  # BM = 16, 64, 128 and 256
        x16 = torch.randn(M, k_pad, device="cuda").bfloat16()
        ref = wsmma.ws_mma_ref(x16, qdata, scale, bias, bits)
        configs = tuning.candidates("ws", M, N, k_pad, 132, bits)
        stagger = not configs[0].get("STAGGER", False)
        configs += [dict(configs[0], SPLIT_K=3), dict(configs[0], SPLIT_K=3, STAGGER=stagger),
                    dict(configs[0], SPLIT_K=5, STAGGER=stagger)]  # (K = 1000: eight blocks, the fifth slice empty)
        configs += [dict(c, STAGGER=True) for c in configs if c.get("DEC_PARTS") == 2][:1]
        if configs[0]["BM"] <= 128:  # (BM = 256 fills the shared memory and the registers already)
            configs += [dict(configs[0], XSTAGES=3, WSTAGES=3, QSTAGES=2),
                        dict(configs[0], DEC_WARPS=8, DEC_REGS=120)]  # eight decoding warps: Q4 went wrong before 16a
        for config in configs:
            for out_dtype in (torch.float32, torch.bfloat16) if M == 37 else (torch.float32,):
                for _ in range(2):  # the split-K counters are back to zero for the next call
                    torch.full((M, N), float("nan"), device="cuda")
                    out = wsmma.ws_mma(x16, qdata, scale, bias, bits, 128, out_dtype, config)
                    assert out.dtype == out_dtype and torch.isfinite(out).all(), (M, config)
                    tolerance = 1e-5 if out_dtype == torch.float32 else 2 * torch.finfo(out_dtype).eps
                    assert rel_error(out, ref) < tolerance, (M, config, out_dtype)
    assert int(counter_buffer(qdata.device).abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
@pytest.mark.parametrize("N,K", [(1000, 1000), (300, 4096), (4096, 4096)])
def test_gpu_ws_rs_poisoned_output_every_candidate(bits, N, K):
    """The register-operand warp-specialized kernel (Gluon, GPU only): the tuner's candidate and other configs (BM 8
    to 256, M tiles cut short, no split K and split K uneven and with an empty slice, shallower and deeper rings, both
    activation orders, the norms on the sums and on the weights, two and four consumer warpgroups), a bias, float16
    activations, float32 and bfloat16 outputs, each output written and right."""
    from hlwq_ops.kernels import wsmma, wsrs

    if not wsmma.runs_on(torch.device("cuda")):
        pytest.skip("the warp-specialized kernels need sm_90 and Gluon")
    qdata, scale = _packed(N, K, bits, device="cuda")
    k_pad = scale.shape[1] * 128
    bias = torch.randn(N, device="cuda")
    for M in (3, 16, 37, 64, 100, 300):
        for dtype in (torch.bfloat16, torch.float16) if M == 37 else (torch.bfloat16,):
            x = torch.randn(M, k_pad, device="cuda")
            configs = tuning.candidates("wsrs", M, N, k_pad, 132, bits)
            two = [c for c in configs if c.get("PHASES", 1) == 1]  # (two consumer warpgroups)
            configs += [dict(two[0], SPLIT_K=1), dict(two[0], SPLIT_K=3),  # (the candidates here split K)
                        dict(two[0], SPLIT_K=5),  # (K = 1000: the fifth slice empty)
                        dict(two[1], SPLIT_K=1),  # (the second two-warpgroup one: the other order, or BM = 128)
                        dict(two[0], XBOX={16: 64, 64: 16}[two[0]["XBOX"]])]  # (the other order at any BM)
            if M <= 64:
                configs += [dict(two[0], BM=8 if M <= 8 else 32), dict(two[0], QSTAGES=2, XSTAGES=2),
                            dict(two[0], QSTAGES=6, XSTAGES=4)]
            four = [c for c in configs if c.get("PHASES", 1) == 2][:1]  # (four consumer warpgroups, at M <= 16)
            for c in four:  # split K uneven, with an empty slice and none; other even rings; BM = 8 and 32
                configs += [dict(c, SPLIT_K=3), dict(c, SPLIT_K=5), dict(c, SPLIT_K=1), dict(c, QSTAGES=2, XSTAGES=2),
                            dict(c, QSTAGES=6, XSTAGES=2), dict(c, BM=8 if M <= 8 else 32, REGS=112)]
            if M in (37, 100):  # the norms on the weights at BM = 64 and 128, split K and not
                configs += [dict(configs[0], NORM_ACC=False), dict(configs[0], NORM_ACC=False, SPLIT_K=1)]
            for config in configs:
                xp = permute_activations(x, dtype, wsrs.activation_span(config))
                ref = wsrs.ws_rs_ref(xp, qdata, scale, bias, bits, wsrs.activation_span(config),
                                     config.get("NORM_ACC", True))
                for out_dtype in (torch.float32, torch.bfloat16) if M in (37, 300) else (torch.float32,):
                    for _ in range(2):  # twice: nothing one call leaves behind may change the next
                        torch.full((M, N), float("nan"), device="cuda", dtype=out_dtype)
                        out = wsrs.ws_rs(xp, qdata, scale, bias, bits, 128, out_dtype, config)
                        assert out.dtype == out_dtype and torch.isfinite(out).all(), (M, config)
                        tolerance = 1e-5 if out_dtype == torch.float32 else 2 * torch.finfo(out_dtype).eps
                        assert rel_error(out, ref) < tolerance, (M, dtype, config, out_dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 5])
def test_gpu_linear_tuned_tensor_core_choice(bits):
    """Tuned, the tensor-core path may pick the tensor-core GEMV (or, on sm_90, the register-operand ws kernel; on
    a layer this small the GEMV competes too); whichever it picks is right (M = 3..8)."""
    qdata, scale = _packed(4096, 4096, bits, device="cuda")
    w_hat = fmt.dequantize_ref(qdata, scale, bits, 128, 4096, torch.float64)
    for M in (3, 8):
        x = torch.randn(M, 4096, device="cuda").bfloat16()
        ref = x.double() @ w_hat.t()
        bf16_err = rel_error(x @ w_hat.bfloat16().t(), ref)
        y = kernels.linear(x, qdata, scale, None, bits, 128, 4096, None)
        assert rel_error(y, ref) <= 2 * bf16_err, M
    from hlwq_ops.kernels import wsmma

    family = "wgmma+tc+wsrs" if wsmma.runs_on(qdata.device) else "wgmma+tc"  # (wsrs where the ws kernels run)
    tuned = [key.split("/")[0] for M in (3, 8) for key in tuning.tuned_choices(M, 4096, 4096, bits, qdata.device)]
    assert tuned and all(key == f"gemv+{family}" for key in tuned), tuned  # (tuning.gemv_competes: M <= 8)


@pytest.mark.gpu
def test_gpu_no_host_sync_and_cuda_graph():
    qdata, scale = _packed(4096, 4096, 5, device="cuda")
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    torch.ops.hlwq.linear(x, qdata, scale, None, 5, 128, 4096)  # tune outside the graph
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.hlwq.linear(x, qdata, scale, None, 5, 128, 4096)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.ops.hlwq.linear(x, qdata, scale, None, 5, 128, 4096)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(y, torch.ops.hlwq.linear(x, qdata, scale, None, 5, 128, 4096))



@pytest.mark.gpu
@pytest.mark.parametrize("dependent", [False, True])
def test_gpu_ws_rs_split_k_sum_kernel_in_cuda_graph(dependent, monkeypatch):
    """The register-operand ws kernel with split K (its partials summed by reduce_split_k after it) at BM = 16 (four
    consumer warpgroups), 128 and 256, with and without programmatic dependent launch: no host sync, and captured in
    a CUDA graph whose replay on new activations writes the right output."""
    from hlwq_ops.kernels import common, wsmma, wsrs

    if not wsmma.runs_on(torch.device("cuda")):
        pytest.skip("the warp-specialized kernels need sm_90 and Gluon")
    monkeypatch.setattr(common, "pdl_requested", lambda: dependent)
    N, K, M = 1000, 4096, 300
    qdata, scale = _packed(N, K, 5, device="cuda")
    bias = torch.randn(N, device="cuda")
    for config in (dict(BM=16, SPLIT_K=4, QSTAGES=4, XSTAGES=4, XBOX=64, REGS=120, PHASES=2),
                   dict(BM=128, SPLIT_K=3, QSTAGES=4, XSTAGES=3, XBOX=64, REGS=232, NORM_ACC=True),
                   dict(BM=256, SPLIT_K=2, QSTAGES=4, XSTAGES=2, XBOX=64, REGS=240, NORM_ACC=False)):
        span = wsrs.activation_span(config)
        xp = permute_activations(torch.randn(M, K, device="cuda"), torch.bfloat16, span)
        wsrs.ws_rs(xp, qdata, scale, bias, 5, 128, torch.bfloat16, config)  # compile outside the graph
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            wsrs.ws_rs(xp, qdata, scale, bias, 5, 128, torch.bfloat16, config)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = wsrs.ws_rs(xp, qdata, scale, bias, 5, 128, torch.bfloat16, config)
        xp.copy_(permute_activations(torch.randn(M, K, device="cuda"), torch.bfloat16, span))
        y.fill_(float("nan"))
        graph.replay()
        ref = wsrs.ws_rs_ref(xp, qdata, scale, bias, 5, span, config.get("NORM_ACC", True))
        assert torch.isfinite(y).all() and rel_error(y, ref) < 2 * torch.finfo(torch.bfloat16).eps, config

@triton.jit
def _late_copy(src, dst, n, spin, BLOCK: tl.constexpr):
    """``dst = src``, written after ``spin`` dependent FMAs (a fraction of a millisecond), having let the next kernel
    in the stream launch at once (if it was launched with programmatic dependent launch)."""
    tl.extra.cuda.gdc_launch_dependents()
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    delay = tl.zeros([BLOCK], dtype=tl.float32)
    for _ in range(spin):
        delay = delay * 0.5 + 1.0
    x = tl.load(src + offsets, mask=offsets < n)
    tl.store(dst + offsets, x + tl.where(delay < 0, 1.0, 0.0).to(x.dtype), mask=offsets < n)


def _pdl_consumer(kernel, bits, M, N, K):
    """A kernel launched with programmatic dependent launch (by name): ``(input maker, launch(input))``."""
    qdata, scale = _packed(N, K, bits, device="cuda")
    gemv_config = tuning.candidates("gemv", M, N, K, 132, bits)[0]
    tc_config = next(c for c in tuning.candidates("wgmma+tc", M, N, K, 132, bits) if c.get("kernel"))
    wgmma_config = tuning.candidates("wgmma", M, N, K, 132, bits)[0]
    wsrs_configs = tuning.candidates("wsrs", M, N, K, 132, bits)  # (BM = 16, split K)
    wsrs_config = next(c for c in wsrs_configs if c.get("PHASES", 1) == 1)  # (two consumer warpgroups)
    four = next(c for c in wsrs_configs if c.get("PHASES", 1) == 2)
    from hlwq_ops.kernels import wsrs

    def raw():
        return torch.randn(M, K, device="cuda")

    def bf16():
        return torch.randn(M, K, device="cuda").bfloat16()

    return {
        "gemv-rotating": (raw, lambda x: gemv(x, qdata, scale, None, bits, 128, None, torch.float32, gemv_config,
                                              rotate=True)),
        "gemv": (raw, lambda x: gemv(x, qdata, scale, None, bits, 128, None, torch.float32, gemv_config)),
        "tc_gemv": (bf16, lambda x: tc_gemv(x, qdata, scale, None, bits, 128, None, torch.float32, tc_config)),
        "wgmma": (bf16, lambda x: wgmma(x, qdata, scale, None, bits, 128, torch.float32, wgmma_config)),
        "fwht": (raw, lambda x: kernels.fwht(x, 128, torch.float32)),
        # the register-operand ws kernel with split K (summed by the sum kernel after it): BM = 16, both forms, and 128
        "wsrs": (bf16, lambda x: wsrs.ws_rs(x, qdata, scale, None, bits, 128, torch.float32, wsrs_config)),
        "wsrs-four": (bf16, lambda x: wsrs.ws_rs(x, qdata, scale, None, bits, 128, torch.float32, four)),
        "wsrs-128": (bf16, lambda x: wsrs.ws_rs(x, qdata, scale, None, bits, 128, torch.float32, dict(
            BM=128, SPLIT_K=3, QSTAGES=4, XSTAGES=3, XBOX=64, REGS=232, NORM_ACC=True))),
    }[kernel]


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["gemv-rotating", "gemv", "tc_gemv", "wgmma", "fwht", "wsrs", "wsrs-four",
                                    "wsrs-128"])
@pytest.mark.parametrize("M", [1, 8])
def test_gpu_dependent_launch_waits_for_its_input(kernel, M, monkeypatch):
    """With HLWQ_PDL=1 each kernel may launch while the kernel before it runs; that kernel here writes the input late
    (after a spin) and lets it launch at once, so a kernel that read its input before ``griddepcontrol.wait`` would
    read the stale one. Eagerly and replayed in a CUDA graph: the output of the new input, bit for bit."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("programmatic dependent launch needs sm_90")
    from hlwq_ops.kernels import common, wsmma

    if kernel.startswith("wsrs") and not wsmma.runs_on(torch.device("cuda")):
        pytest.skip("the warp-specialized kernels need sm_90 and Gluon")

    monkeypatch.setenv("HLWQ_AUTOTUNE", "0")
    make, launch = _pdl_consumer(kernel, 5, M, 1000, 4096)
    stale, new = make(), make()
    expected, from_stale = launch(new), launch(stale)
    assert not torch.equal(expected, from_stale)  # the test can tell the two inputs apart
    monkeypatch.setattr(common, "pdl_requested", lambda: True)
    x = stale.clone()
    _late_copy[(triton.cdiv(new.numel(), 1024),)](new, x, new.numel(), 200_000, BLOCK=1024)
    assert torch.equal(launch(x), expected), "eager"
    x.copy_(stale)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _late_copy[(triton.cdiv(new.numel(), 1024),)](new, x, new.numel(), 200_000, BLOCK=1024)
        out = launch(x)
    x.copy_(stale)
    graph.replay()
    assert torch.equal(out, expected), "CUDA graph"


@pytest.mark.gpu
def test_gpu_reduce_overhead_compile():
    from torchao.quantization import quantize_

    from hlwq_ops import hlwq_q5

    m = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False), torch.nn.Linear(4096, 1024)).cuda().bfloat16()
    quantize_(m, hlwq_q5())
    x = torch.randn(1, 4096, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):
            out = compiled(x)
    assert rel_error(out, eager) < 1e-2
    assert math.isfinite(out.float().sum().item())


@pytest.mark.gpu
def test_gpu_tuning_times_on_same_shape_weights_not_copies():
    from hlwq_ops import HLWQTensor

    layers = [HLWQTensor.from_hp(torch.randn(392, 384, device="cuda"), 5) for _ in range(3)]  # a shape no other test
    other = HLWQTensor.from_hp(torch.randn(256, 384, device="cuda"), 5)  # another shape: never in the set
    weights = tuning._weight_set(layers[0].qdata, layers[0].scale)
    ptrs = [q.data_ptr() for q, _ in weights]
    assert ptrs[:3] == [q.qdata.data_ptr() for q in layers]  # itself, then the live same-shape layers
    assert other.qdata.data_ptr() not in ptrs
    assert len(set(ptrs)) == len(ptrs)  # the rest are copies
    del weights, layers[1]
    import gc

    gc.collect()
    ptrs = [q.data_ptr() for q, _ in tuning._weight_set(layers[0].qdata, layers[0].scale)]
    assert ptrs[1] == layers[1].qdata.data_ptr()  # the dead one is gone


@pytest.mark.gpu
def test_gpu_eager_linear_skips_the_dispatcher_only_when_unobserved(monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    from hlwq_ops import HLWQTensor

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    from hlwq_ops import ops

    direct_calls = []  # linear_call's decision, each call: True runs the implementation without the op
    plain_eager = ops._plain_eager
    monkeypatch.setattr(ops, "_plain_eager", lambda *args: direct_calls.append(plain_eager(*args)) or direct_calls[-1])
    w = HLWQTensor.from_hp(torch.randn(300, 256, device="cuda"), 5)
    x = torch.randn(3, 256, device="cuda", dtype=torch.bfloat16)
    ref = torch.ops.hlwq.linear(x, w.qdata, w.scale, None, 5, 128, 256)
    with torch.no_grad():
        direct = torch.nn.functional.linear(x, w)
        assert direct_calls == [True]  # nothing observes it: the implementation, not the op
        with Ops() as mode:
            observed = torch.nn.functional.linear(x, w)
        assert direct_calls == [True, False]
    # a dispatch mode still sees the op (no gradient here: the one without autograd)
    assert [name for name in mode.seen if name.startswith("hlwq.")] == ["hlwq.linear_inference.default"]
    torch.testing.assert_close(direct, ref, rtol=0, atol=0)
    torch.testing.assert_close(observed, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="weight expects K=256"):  # the checks run on the direct path too
        torch.nn.functional.linear(torch.randn(3, 128, device="cuda", dtype=torch.bfloat16), w)
    assert direct_calls == [True, False, True]
    xg = x.float().requires_grad_()
    torch.nn.functional.linear(xg, w).sum().backward()  # autograd: through the op
    assert xg.grad is not None and xg.grad.shape == xg.shape
    assert direct_calls == [True, False, True, False]


_CUDAGRAPH_FIRST_CALL = """
import torch
from torchao.quantization import quantize_
from hlwq_ops import hlwq_q5

m = torch.nn.Sequential(torch.nn.Linear(2048, 384, bias=False), torch.nn.Linear(384, 1024)).cuda().bfloat16()
quantize_(m, hlwq_q5())
compiled = torch.compile(m, mode="reduce-overhead", fullgraph=True)
with torch.no_grad():
    for M in (1, 8, 200, 1, 8):  # GEMV (split-K), tensor cores (FWHT), dequantize
        x = torch.randn(M, 2048, device="cuda", dtype=torch.bfloat16)
        torch.testing.assert_close(compiled(x).float(), m(x).float(), rtol=2e-2, atol=2e-2)
print("ok")
"""


@pytest.mark.gpu
def test_gpu_compiled_first_call_in_cudagraph_pool():
    """A fresh process whose first HLWQ calls run in torch.compile's CUDA graphs (what transformers' generate()
    does): the kernels' per-device buffers exist before them, so none is left in the graphs' memory pool."""
    import subprocess
    import sys

    import os
    from pathlib import Path

    import hlwq_ops

    root = str(Path(hlwq_ops.__file__).parents[1])  # the package under test, not another install
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", "import hlwq_ops; print(hlwq_ops.__file__)\n" + _CUDAGRAPH_FIRST_CALL],
                          capture_output=True, text=True, timeout=600, cwd=root, env=env)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == hlwq_ops.__file__


@pytest.mark.parametrize("path", ["mma", "dequant"])
def test_float16_activations_that_rotate_past_float16(path, monkeypatch):
    """float16 activations whose rotated blocks exceed 65504 (6000 * sqrt(128)) give a finite, right output: the
    16-bit paths multiply float16 activations in bfloat16, the GEMV in float32."""
    monkeypatch.setenv("HLWQ_PATH", path)
    qdata, scale = fmt.quantize_ref(torch.randn(16, 128, device=KERNEL_DEVICE) * 1e-3, 5, 128)
    x = torch.full((4, 128), 6000.0, device=KERNEL_DEVICE).half()
    assert torch.isinf(kernels.fwht(x, 128, torch.float16)).any()  # what the old float16 rotation gave
    y = kernels.linear(x, qdata, scale, None, 5, 128, 128, None)
    ref = x.double() @ fmt.dequantize_ref(qdata, scale, 5, 128, 128, torch.float64).t()
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert rel_error(y, ref) < 4 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("M", [1, 3])  # (the GEMV's rows; the tensor-core paths took N = 0 already)
def test_a_weight_without_rows_gives_an_empty_output(M):
    """N = 0: the GEMV's plan (M <= 4) raised "a GEMV group takes 1 to 3 weights of at least one row each"; the CPU
    implementation and the fake give (M, 0)."""
    q, s = torch.ops.hlwq.quantize(torch.randn(0, 200), 5, 128)
    q, s = q.to(KERNEL_DEVICE), s.to(KERNEL_DEVICE)
    x = torch.randn(M, 200, device=KERNEL_DEVICE)
    assert kernels.linear(x, q, s, None, 5, 128, 200, None).shape == (M, 0)
    xr = torch.randn(M, 256, device=KERNEL_DEVICE)
    assert kernels.linear_rotated(xr, q, s, None, 5, 128, None, torch.float32).shape == (M, 0)
