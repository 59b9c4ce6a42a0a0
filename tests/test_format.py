import math

import pytest
import torch

from hlwq_ops import format as fmt
from hlwq_ops.codebook import codebook, gaussian_mse
from hlwq_ops.hadamard import fwht_ref

from ._utils import DEVICES, rel_error


def _decode_by_spec(qdata: torch.Tensor, bits: int, block_size: int) -> torch.Tensor:
    """Decode codes with Python ints, following the layout text in format.py word for word."""
    rows = []
    for row in qdata.tolist():
        per_block = block_size * bits // 8
        codes = []
        for b in range(len(row) // per_block):
            block = row[b * per_block : (b + 1) * per_block]
            start = offset = 0
            block_codes = [0] * block_size
            for width in fmt.plane_widths(bits):
                plane = block[start : start + block_size * width // 8]
                words = [int.from_bytes(bytes(plane[4 * j : 4 * j + 4]), "little") for j in range(len(plane) // 4)]
                per_word = 32 // width
                for i in range(block_size):
                    value = (words[i // per_word] >> (width * (i % per_word))) & ((1 << width) - 1)
                    block_codes[i] |= value << offset
                start += len(plane)
                offset += width
            codes.append(block_codes)
        rows.append(codes)
    return torch.tensor(rows)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("block_size", [32, 128])
def test_pack_matches_documented_layout(bits, block_size):
    codes = torch.randint(0, 2**bits, (3, 2, block_size))
    qdata = fmt.pack_codes(codes, bits)
    assert qdata.dtype == torch.uint8
    assert qdata.shape == (3, 2 * block_size * bits // 8)
    assert torch.equal(_decode_by_spec(qdata, bits, block_size), codes)
    assert torch.equal(fmt.unpack_codes(qdata, bits, block_size), codes)


@pytest.mark.parametrize("bits", range(2, 9))
def test_exact_bits_per_weight(bits):
    (q_shape, s_shape) = fmt.packed_shapes(4096, 4096, bits, 128)
    total_bits = 8 * q_shape[0] * q_shape[1] + 16 * s_shape[0] * s_shape[1]
    assert total_bits / (4096 * 4096) == bits + 0.125


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bits", range(2, 9))
def test_quantize_error_near_lloyd_max_distortion(device, bits):
    w = torch.randn(256, 512, device=device)
    qdata, scale = fmt.quantize_ref(w, bits, 128, scale_mode="norm")
    w_hat = fmt.dequantize_ref(qdata, scale, bits, 128, 512)
    err = rel_error(w_hat, w) ** 2
    # A rotated, normalized block is close to N(0, 1): the error is the
    # Lloyd-Max distortion, a little lower (the coordinates are bounded).
    expected = gaussian_mse(codebook(bits))
    assert 0.85 * expected < err < 1.05 * expected


@pytest.mark.parametrize("bits,gain", [(2, 0.995), (4, 0.9), (5, 0.85), (8, 0.85)])
def test_scale_modes_are_ordered(bits, gain):
    w = torch.randn(128, 1024)
    errs = {}
    for mode in fmt.SCALE_MODES:
        qdata, scale = fmt.quantize_ref(w, bits, 128, scale_mode=mode)
        errs[mode] = (fmt.dequantize_ref(qdata, scale, bits, 128, 1024) - w).square().sum(-1)
    # Per row: the search includes factor 1 with the least-squares refit.
    assert bool((errs["search"] <= errs["lsq"] * (1 + 1e-5)).all())
    assert bool((errs["lsq"] <= errs["norm"] * (1 + 1e-5)).all())
    assert errs["search"].sum() < gain * errs["norm"].sum()


def test_dequantize_rotated_is_the_rotated_weight():
    w = torch.randn(16, 256)
    qdata, scale = fmt.quantize_ref(w, 5, 128)
    wr = fmt.dequantize_rotated_ref(qdata, scale, 5, 128)
    torch.testing.assert_close(fwht_ref(wr, 128), fmt.dequantize_ref(qdata, scale, 5, 128, 256))


def test_norm_mode_codes_are_nearest_centroids():
    w = torch.randn(8, 128, dtype=torch.float64)
    qdata, scale = fmt.quantize_ref(w, 3, 128, scale_mode="norm")
    u = fwht_ref(w, 128) * math.sqrt(128) / w.norm(dim=-1, keepdim=True)
    c = codebook(3, dtype=torch.float64)
    nearest = (u[..., None] - c).abs().argmin(-1)
    assert torch.equal(fmt.unpack_codes(qdata, 3, 128).view(8, 128), nearest)
    torch.testing.assert_close(scale.double(), w.norm(dim=-1, keepdim=True), rtol=1e-3, atol=0)


@pytest.mark.parametrize("K", [128, 129, 300, 1000])
def test_k_padding(K):
    w = torch.randn(10, K)
    qdata, scale = fmt.quantize_ref(w, 5, 128)
    n_blocks = -(-K // 128)
    assert scale.shape == (10, n_blocks)
    assert qdata.shape == (10, n_blocks * 80)
    w_hat = fmt.dequantize_ref(qdata, scale, 5, 128, K)
    assert w_hat.shape == (10, K)
    assert rel_error(w_hat, w) < 0.08


def test_zero_blocks_reconstruct_to_zero():
    w = torch.randn(4, 256)
    w[1] = 0
    w[2, :128] = 0
    qdata, scale = fmt.quantize_ref(w, 4, 128)
    w_hat = fmt.dequantize_ref(qdata, scale, 4, 128, 256)
    assert bool((w_hat[1] == 0).all()) and bool((w_hat[2, :128] == 0).all())
    assert scale[1].abs().max() == 0


def test_deterministic():
    w = torch.randn(64, 256)
    a = fmt.quantize_ref(w, 5, 128)
    b = fmt.quantize_ref(w.clone(), 5, 128)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weight_dtypes(dtype):
    w = torch.randn(32, 128, dtype=dtype)
    qdata, scale = fmt.quantize_ref(w, 5, 128)
    assert rel_error(fmt.dequantize_ref(qdata, scale, 5, 128, 128), w) < 0.06


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weight(bad):
    w = torch.randn(4, 128)
    w[2, 7] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at index \(2, 7\)\)"):
        fmt.quantize_ref(w, 5, 128)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int8, torch.uint8, torch.bool])
def test_integer_weight(dtype):
    with pytest.raises(TypeError, match="weight dtype must be one of"):
        fmt.quantize_ref(torch.ones(4, 128, dtype=dtype), 5, 128)


def test_weight_not_2d():
    with pytest.raises(ValueError, match=r"weight must be 2-D .* got shape \(4, 2, 128\)"):
        fmt.quantize_ref(torch.randn(4, 2, 128), 5, 128)


def test_scale_overflowing_fp16():
    w = torch.randn(4, 128)
    w[3] *= 1e5
    with pytest.raises(ValueError, match="at row 3, block 0 overflows float16"):
        fmt.quantize_ref(w, 5, 128)


def test_bad_scale_mode():
    with pytest.raises(ValueError, match="scale_mode must be one of"):
        fmt.quantize_ref(torch.randn(4, 128), 5, 128, scale_mode="max")


def test_bad_codebook():
    with pytest.raises(ValueError, match=r"codebook must be float32 of shape \(32,\) for bits=5"):
        fmt.quantize_ref(torch.randn(4, 128), 5, 128, codebook=torch.randn(16))


def test_check_packed_messages():
    qdata, scale = fmt.quantize_ref(torch.randn(8, 256), 5, 128)
    with pytest.raises(ValueError, match=r"qdata has shape \(8, 160\), expected \(8, 128\) .*bits=4"):
        fmt.check_packed(qdata, scale, 4, 128, 256)
    with pytest.raises(ValueError, match=r"scale has shape \(8, 2\), expected \(8, 3\)"):
        fmt.check_packed(qdata, scale, 5, 128, 300)
    with pytest.raises(ValueError, match="scale must be a 2-D float16"):
        fmt.check_packed(qdata, scale.float(), 5, 128, 256)
    with pytest.raises(ValueError, match="qdata must be a 2-D uint8"):
        fmt.check_packed(qdata.to(torch.int8), scale, 5, 128, 256)
    assert fmt.check_packed(qdata, scale, 5, 128, 256) == 8


@pytest.mark.parametrize("scale_mode", ["lsq", "search"])
def test_custom_codebook_with_a_zero_level(scale_mode):
    """A block that maps to a zero centroid everywhere (an all-zero block) gets scale 0, not 0 / 0 = NaN."""
    codebook = torch.tensor([-1.5, -0.5, 0.0, 1.0])
    w = torch.randn(3, 256)
    w[1] = 0.0
    qdata, scale = fmt.quantize_ref(w, 2, 128, codebook=codebook, scale_mode=scale_mode)
    assert torch.isfinite(scale.float()).all() and (scale[1] == 0).all()
    assert torch.isfinite(fmt.dequantize_ref(qdata, scale, 2, 128, 256, codebook=codebook)).all()


@pytest.mark.parametrize("bad", ["descending", "repeated", "nan"])
def test_codebook_to_quantize_with_must_be_ascending(bad):
    c = codebook(4, torch.device("cpu")).clone()
    if bad == "descending":
        c = c.flip(0)
    elif bad == "repeated":
        c = torch.cat([c[:1], c[:-1]])
    else:
        c[3] = float("nan")
    with pytest.raises(ValueError, match="finite and strictly ascending"):
        fmt.quantize_ref(torch.randn(4, 128), 4, 128, codebook=c)


def test_weights_whose_rotation_overflows_float32():
    """Finite weights so large that the float32 rotation gives inf - inf: the overflow error, not a NaN scale."""
    w = torch.full((1, 128), 3e38)
    w[0, 1::2] = -3e38
    for mode in ("norm", "lsq", "search"):
        with pytest.raises(ValueError, match="overflows float16"):
            fmt.quantize_ref(w, 5, 128, scale_mode=mode)


def test_scales_below_float16_say_the_blocks_become_zero(caplog):
    with caplog.at_level("WARNING", logger="hlwq_ops.format"):
        _, scale = fmt.quantize_ref(torch.randn(2, 128) * 1e-9, 5, 128)
    assert (scale == 0).all()
    assert "stored as zeros" in caplog.text and "subnormals" not in caplog.text
