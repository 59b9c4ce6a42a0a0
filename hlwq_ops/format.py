"""The HLWQ storage format: reference quantize / dequantize, bit packing, checks.

A weight ``W`` of shape (N, K) is cut into blocks of ``B`` (``block_size``)
weights along K; K is zero-padded to ``K_pad = n_blocks * B``. For each block
``w`` (a row slice of length B):

    r    = ||w||_2
    u    = sqrt(B) * H_B @ w / r                (each coordinate ~ N(0, 1))
    code = argmin_j |u - c_j|                   (c: Lloyd-Max codebook, 2**bits levels)
    s    = r                                    (scale_mode="norm", the seed's choice)
         = r * <u, c[code]> / ||c[code]||^2     (scale_mode="lsq", least squares)
    "search": codes re-chosen for each scale r * f, f in SEARCH_FACTORS,
              each followed by the least-squares s; the block keeps the best.

and ``w_hat = (s / sqrt(B)) * H_B @ c[code]``. Because ``H_B`` is symmetric,
a linear layer never needs ``w_hat``: with ``xr = fwht(x)`` blockwise,

    y[m, n] = sum_b (s[n, b] / sqrt(B)) * < c[code[n, b, :]], xr[m, b*B:(b+1)*B] >

Packed layout (``qdata``, uint8, shape (N, n_blocks * B * bits / 8))
----------------------------------------------------------------------
Each code is split into bit planes of width 8, 4, 2 or 1 following the binary
digits of ``bits`` from the least significant bits up: 2 -> [2], 3 -> [2, 1],
4 -> [4], 5 -> [4, 1], 6 -> [4, 2], 7 -> [4, 2, 1], 8 -> [8]. Plane ``p`` holds
bits ``[o_p, o_p + w_p)`` of every code (``o_p`` the sum of the earlier widths).

A row is ``n_blocks`` blocks of ``B * bits / 8`` bytes, block after block.
Inside a block the planes follow each other (plane 0 first), each
``B * w_p / 8`` bytes. Inside a plane, code ``i`` of the block sits at bits
``[w_p * (i % (32 / w_p)), ...)`` of little-endian 32-bit word
``i // (32 / w_p)``: codes are packed low bits first, 32 / w_p to a word.

Why: every plane width divides 32, so no code straddles a word, and a thread
that loads the words of 32 consecutive codes extracts each code's plane with
one shift and one mask (two integer ops), at every bit width; the planes of a
code sit at the same position of their words, so they recombine with one more
shift-or. Every block and plane starts on a 4-byte boundary (16 bytes for
B = 128), so wide vector loads work.

``scale``: float16, shape (N, n_blocks).
"""

from __future__ import annotations

import logging
import math

import torch

from .codebook import check_bits, codebook as standard_codebook
from .hadamard import check_block_size, fwht_ref
from .nearest import CentroidGrid, midpoints

__all__ = [
    "SCALE_MODES",
    "SEARCH_FACTORS",
    "ACTIVATION_DTYPES",
    "WEIGHT_DTYPES",
    "plane_widths",
    "block_bytes",
    "packed_shapes",
    "check_bits",
    "check_scale_mode",
    "check_weight",
    "check_packed",
    "check_activation",
    "pack_codes",
    "unpack_codes",
    "quantize_ref",
    "dequantize_rotated_ref",
    "dequantize_ref",
    "linear_rotated_ref",
]

logger = logging.getLogger(__name__)

SCALE_MODES = ("search", "lsq", "norm")
# Scale factors tried by scale_mode="search": 21 points cover the best factor of
# 98% of blocks (benchmarks/quality.py measures what the search buys).
SEARCH_FACTORS = tuple(0.8 + 0.02 * i for i in range(21))
ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_FP16_MAX = torch.finfo(torch.float16).max
_FP16_TINY = torch.finfo(torch.float16).tiny


def plane_widths(bits: int) -> tuple[int, ...]:
    """Bit-plane widths of a ``bits``-bit code, least significant plane first."""
    check_bits(bits)
    return {2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1), 8: (8,)}[bits]


def block_bytes(bits: int, block_size: int) -> int:
    """Packed bytes of one block of ``block_size`` codes."""
    return block_size * bits // 8


def packed_shapes(N: int, K: int, bits: int, block_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shapes of (qdata, scale) for an (N, K) weight."""
    n_blocks = -(-K // block_size)
    return (N, n_blocks * block_bytes(bits, block_size)), (N, n_blocks)


# ---------------------------------------------------------------------------
# Checks shared by the real and the fake (meta) implementations.
# ---------------------------------------------------------------------------


def check_scale_mode(scale_mode: str) -> None:
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}")


def check_weight(w: torch.Tensor) -> None:
    """A weight to quantize: 2-D, floating point."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(w).__name__}")
    if w.dtype not in WEIGHT_DTYPES:
        raise TypeError(f"weight dtype must be one of {WEIGHT_DTYPES}, got {w.dtype}")
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(w.shape)}")


def check_codebook(codebook: torch.Tensor | None, bits: int, device: torch.device) -> None:
    if codebook is None:
        return
    if codebook.dtype != torch.float32 or codebook.shape != (2**bits,):
        raise ValueError(
            f"codebook must be float32 of shape ({2**bits},) for bits={bits}, "
            f"got {codebook.dtype} of shape {tuple(codebook.shape)}"
        )
    if codebook.device != device:
        raise ValueError(f"codebook is on {codebook.device}, qdata is on {device}")


def check_packed(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    block_size: int,
    K: int,
    codebook: torch.Tensor | None = None,
) -> int:
    """Check that (qdata, scale) hold an (N, K) weight at ``bits``; return N."""
    check_bits(bits)
    check_block_size(block_size)
    if qdata.dtype != torch.uint8 or qdata.dim() != 2:
        raise ValueError(f"qdata must be a 2-D uint8 tensor, got {qdata.dtype} of shape {tuple(qdata.shape)}")
    if scale.dtype != torch.float16 or scale.dim() != 2:
        raise ValueError(f"scale must be a 2-D float16 tensor, got {scale.dtype} of shape {tuple(scale.shape)}")
    if K < 1:
        raise ValueError(f"K must be positive, got {K}")
    N = qdata.shape[0]
    q_shape, s_shape = packed_shapes(N, K, bits, block_size)
    if tuple(scale.shape) != s_shape:
        raise ValueError(
            f"scale has shape {tuple(scale.shape)}, expected {s_shape} for N={N}, K={K}, block_size={block_size}"
        )
    if tuple(qdata.shape) != q_shape:
        raise ValueError(
            f"qdata has shape {tuple(qdata.shape)}, expected {q_shape} "
            f"for N={N}, K={K}, bits={bits}, block_size={block_size}"
        )
    if scale.device != qdata.device:
        raise ValueError(f"scale is on {scale.device}, qdata is on {qdata.device}")
    check_codebook(codebook, bits, qdata.device)
    return N


def check_activation(x: torch.Tensor, K: int, what: str = "x") -> None:
    if x.dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{what} dtype must be one of {ACTIVATION_DTYPES}, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"{what} has K={x.shape[-1] if x.dim() else None}, weight expects K={K}")


# ---------------------------------------------------------------------------
# Bit packing.
# ---------------------------------------------------------------------------


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack codes into the layout above.

    Args:
        codes: (N, n_blocks, B) integer tensor with values in [0, 2**bits).

    Returns:
        (N, n_blocks * B * bits / 8) uint8
    """
    N, n_blocks, B = codes.shape
    codes = codes.to(torch.int32)
    planes = []
    offset = 0
    for width in plane_widths(bits):
        per_byte = 8 // width
        plane = (codes >> offset) & ((1 << width) - 1)
        shifts = torch.arange(per_byte, device=codes.device, dtype=torch.int32) * width
        packed = (plane.view(N, n_blocks, B // per_byte, per_byte) << shifts).sum(-1)
        planes.append(packed.to(torch.uint8))
        offset += width
    return torch.cat(planes, dim=-1).reshape(N, n_blocks * block_bytes(bits, B))


def unpack_codes(qdata: torch.Tensor, bits: int, block_size: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`.

    Args:
        qdata: (N, n_blocks * B * bits / 8) uint8

    Returns:
        (N, n_blocks, B) int64 codes.
    """
    N = qdata.shape[0]
    n_blocks = qdata.shape[1] // block_bytes(bits, block_size)
    blocks = qdata.view(N, n_blocks, block_bytes(bits, block_size)).to(torch.int64)  # sizes: N may be 0
    codes = torch.zeros(N, n_blocks, block_size, dtype=torch.int64, device=qdata.device)
    start = offset = 0
    for width in plane_widths(bits):
        per_byte = 8 // width
        n_bytes = block_size * width // 8
        section = blocks[..., start : start + n_bytes]
        shifts = torch.arange(per_byte, device=qdata.device) * width
        plane = (section[..., None] >> shifts) & ((1 << width) - 1)
        codes |= plane.reshape(N, n_blocks, block_size) << offset
        start += n_bytes
        offset += width
    return codes


# ---------------------------------------------------------------------------
# Reference math (plain torch; the CPU runtime and the oracle of the kernels).
# ---------------------------------------------------------------------------


def _resolve_codebook(codebook: torch.Tensor | None, bits: int, device: torch.device) -> torch.Tensor:
    return standard_codebook(bits, device) if codebook is None else codebook


def _check_finite_and_scale(w: torch.Tensor, s: torch.Tensor) -> None:
    if not bool(torch.isfinite(w).all()):
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"weight has NaN or Inf (first at index {tuple(bad)}); expected finite values")
    # not finite: a block so large that its float32 rotation overflowed (inf - inf in the butterflies)
    big = ~torch.isfinite(s) | (s.abs() > _FP16_MAX)
    if bool(big.any()):
        n, b = big.nonzero()[0].tolist()
        raise ValueError(
            f"block scale {s[n, b].item():.4g} at row {n}, block {b} overflows float16 "
            f"(max {_FP16_MAX}); expected weights with block norms below that"
        )
    lost = (s != 0) & (s.to(torch.float16) == 0)
    if bool(lost.any()):
        logger.warning(
            "%d block scales are below float16's smallest subnormal (%g): those blocks are stored as zeros",
            int(lost.sum()),
            torch.finfo(torch.float16).smallest_normal * 2.0**-10,
        )
    tiny = (s != 0) & (s.abs() < _FP16_TINY) & ~lost
    if bool(tiny.any()):
        logger.warning(
            "%d block scales are below float16's normal range (%g): they are stored as "
            "subnormals with reduced precision",
            int(tiny.sum()),
            _FP16_TINY,
        )


def _check_sorted(codebook: torch.Tensor | None) -> None:
    """Quantizing searches the codebook (:mod:`.nearest`, ``bucketize``): it must be finite and strictly ascending."""
    if codebook is None:
        return
    if not bool(torch.isfinite(codebook).all()) or not bool((codebook[1:] > codebook[:-1]).all()):
        raise ValueError(
            f"a codebook to quantize with must be finite and strictly ascending, got {codebook.tolist()}"
        )


# Rows searched at a time on a CPU: about a million values, whose float32 intermediates stay in the caches through
# the factors' passes (benchmarks/NOTES.md session 66). A GPU takes the whole weight at once (fewer launches).
_CPU_CHUNK_VALUES = 1 << 20


def _codes_and_scale(
    t: torch.Tensor, r: torch.Tensor, c: torch.Tensor, scale_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose codes and block scales.

    Args:
        t: (N, n_blocks, B) rotated blocks times sqrt(B) (``t = r * u``).
        r: (N, n_blocks) block norms.
        c: (L,) sorted codebook.

    Returns:
        codes (N, n_blocks, B) int64 and scales (N, n_blocks) float32 with
        ``t ~= s * c[codes]``.
    """
    # The grid on a CPU only: on an H100 it took 0.298 s a Llama-3-8B layer against bucketize's 0.215
    # (benchmarks/NOTES.md session 66). A NaN has no grid cell; a rotation with a NaN or an infinity (an overflow)
    # fails _check_finite_and_scale afterwards either way.
    grid = None
    if t.device.type == "cpu" and bool(torch.isfinite(t).all()):
        grid = CentroidGrid.for_codebook(c)
    if grid is None:  # not a CPU, a NaN or an infinity in the rotation, or a codebook the grid cannot serve exactly
        grid = _Bucketize(c, midpoints(c))
    safe_r = torch.where(r > 0, r, 1.0)[..., None]
    if scale_mode == "norm":
        return grid.codes(t / safe_r), r
    factors = (1.0,) if scale_mode == "lsq" else SEARCH_FACTORS
    rows = max(1, _CPU_CHUNK_VALUES // max(1, t.shape[1] * t.shape[2])) if t.device.type == "cpu" else max(1, len(t))
    codes = torch.empty(t.shape, dtype=torch.int64, device=t.device)
    s = torch.empty(r.shape, dtype=torch.float32, device=t.device)
    for n in range(0, t.shape[0], rows):
        codes[n : n + rows], s[n : n + rows] = _search(t[n : n + rows], safe_r[n : n + rows], grid, factors)
    return codes, s


class _Bucketize:
    """:class:`~hlwq_ops.nearest.CentroidGrid`'s two look-ups by ``torch.bucketize``."""

    def __init__(self, c: torch.Tensor, boundaries: torch.Tensor):
        self.c, self.boundaries = c, boundaries

    def codes(self, v: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(v, self.boundaries)

    def centroids(self, v: torch.Tensor) -> torch.Tensor:
        return self.c[self.codes(v)]


def _search(
    t: torch.Tensor, safe_r: torch.Tensor, grid: CentroidGrid | _Bucketize, factors: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes re-chosen for each scale ``r * f``, each followed by the least-squares scale; a block keeps the factor
    with the least error. (n, n_blocks, B) and (n, n_blocks, 1) -> codes (n, n_blocks, B), scales (n, n_blocks)."""
    best_err = best_s = best_f = None
    for i, f in enumerate(factors):
        chosen = grid.centroids(t / (safe_r * f))
        # The standard codebooks have no zero level, so the energy is > 0; a custom one may map a whole block
        # (an all-zero one) to 0.0: its scale is 0, not 0 / 0.
        energy = (chosen * chosen).sum(-1)
        s = torch.where(energy > 0, (t * chosen).sum(-1) / torch.where(energy > 0, energy, 1.0), 0.0)
        err = (t - s[..., None] * chosen).square().sum(-1)
        if best_err is None:
            best_err, best_s, best_f = err, s, torch.zeros(err.shape, dtype=torch.int64, device=t.device)
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_f = torch.where(better, i, best_f)
    # each block's codes once more, at its factor (the same float32 arithmetic as in the loop): cheaper than
    # carrying every factor's codes along
    f = torch.tensor(factors, dtype=torch.float32, device=t.device)[best_f][..., None]
    return grid.codes(t / (safe_r * f)), best_s


def quantize_ref(
    w: torch.Tensor,
    bits: int,
    block_size: int = 128,
    codebook: torch.Tensor | None = None,
    scale_mode: str = "search",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize an (N, K) weight to HLWQ, vectorized (runs on the weight's device).

    Args:
        w: (N, K) floating weight.
        bits: code width, 2..8.
        block_size: B, a power of two in 32..1024.
        codebook: (2**bits,) float32 sorted centroids; None for Lloyd-Max N(0, 1).
        scale_mode: "search", "lsq" or "norm" (see the module docstring).

    Returns:
        qdata (N, n_blocks * B * bits / 8) uint8 and scale (N, n_blocks) float16.
    """
    check_weight(w)
    check_bits(bits)
    check_block_size(block_size)
    check_scale_mode(scale_mode)
    check_codebook(codebook, bits, w.device)
    _check_sorted(codebook)
    N, K = w.shape
    n_blocks = -(-K // block_size)
    wf = torch.nn.functional.pad(w.to(torch.float32), (0, n_blocks * block_size - K))
    # t = sqrt(B) * H_B @ w, blockwise: (N, n_blocks, B)
    t = fwht_ref(wf, block_size).view(N, n_blocks, block_size) * math.sqrt(block_size)
    r = t.norm(dim=-1) / math.sqrt(block_size)
    c = _resolve_codebook(codebook, bits, w.device)
    codes, s = _codes_and_scale(t, r, c, scale_mode)
    _check_finite_and_scale(w, s)
    return pack_codes(codes, bits), s.to(torch.float16)


def dequantize_rotated_ref(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The weight in the rotated domain, ``Wr = H_B @ w_hat`` blockwise.

    Returns:
        (N, K_pad) in ``dtype``: ``s / sqrt(B) * c[code]``.
    """
    codes = unpack_codes(qdata, bits, block_size)
    c = _resolve_codebook(codebook, bits, qdata.device)
    wr = c[codes] * (scale.to(torch.float32) / math.sqrt(block_size))[..., None]
    return wr.reshape(qdata.shape[0], scale.shape[1] * block_size).to(dtype)  # sizes, not -1: N may be 0


def dequantize_ref(
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bits: int,
    block_size: int,
    K: int,
    dtype: torch.dtype = torch.float32,
    codebook: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruct ``w_hat`` (N, K) in ``dtype``."""
    wr = dequantize_rotated_ref(qdata, scale, bits, block_size, codebook)
    return fwht_ref(wr, block_size)[:, :K].to(dtype).contiguous()


def linear_rotated_ref(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``y = xr @ Wr.T + bias`` for rotated, padded activations, in float32 math.

    Args:
        xr: (..., K_pad) rotated activations.
        out_dtype: dtype of ``y`` (default: the dtype of ``xr``), rounded to once.

    Returns:
        (..., N)
    """
    wr = dequantize_rotated_ref(qdata, scale, bits, block_size, codebook)
    y = xr.to(torch.float32) @ wr.t()
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(out_dtype or xr.dtype)
