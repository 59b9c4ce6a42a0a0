"""Load checkpoints of the seed engine (polarengine) as HLWQTensors, centroids kept.

The seed's math is HLWQ's with ``scale = norm``: ``w_hat = (norm / sqrt(B)) *
H_B @ c[code]`` blockwise, so its codes and norms become ``qdata`` / ``scale``
unchanged and nothing is re-quantized. A checkpoint is a directory holding
``polar_config.json`` and ``*.safetensors`` files (every one is read).

``polar_config.json`` keys read:

- ``format`` (required): ``"polar_engine_v4"`` or ``"hlwq-q5"``. The tensors
  must be in it: at least one quantized layer, none with the other's suffixes.
- ``block_size``: B for every layer (default 128).
- ``layers``: ``{prefix: {...}}`` per quantized layer, as the seed writes it;
  its ``bits``, ``block_size``, ``in_features`` and ``out_features`` override
  and are checked against the tensors. A prefix listed there must be present.
- ``bit_assignment``: ``{pattern: bits}``; the longest pattern contained in the
  layer prefix gives its bits when ``layers`` does not.
- ``bits`` (or ``weight_bits``): bits of every other layer.

Layouts (``<p>`` is a layer prefix such as ``model.layers.0.mlp.down_proj``;
the layer is returned under ``<p>.weight``):

``polar_engine_v4``
    ``<p>.codes``: (N, K_pad) int8 (or uint8) centroid indices, read ``& 0xFF``
    so 8-bit codes >= 128 survive int8; or, for bits <= 4, (N, K_pad / 2)
    uint8 nibbles in the seed's half-block order (byte i of a block holds code
    i low, code i + B/2 high). ``<p>.norms``: (N, K_pad / B) float16.
    ``<p>.ct_scaled``: (2**bits,) float centroids / sqrt(B), or ``<p>.ct``: the
    centroids (if both are present they must agree). bits = log2 of the number
    of centroids; a bit width named by the config must agree. K is not stored:
    ``layers[p].in_features`` if given, else the caller's (the module's
    ``in_features`` in :func:`load_seed_into`), else K_pad. Centroids equal to
    :func:`hlwq_ops.codebook` within 1e-6 of their largest magnitude load as
    the standard codebook (``codebook=None``); others are kept as ``codebook``.

``hlwq-q5``
    ``<p>.weight__packed``: uint8, any shape, read flat: a big-endian 5-bit
    stream of the (N, n_blocks, B) codes in row-major order, 8 codes per 5
    bytes (``c0 = b0 >> 3``, ``c1 = (b0 & 7) << 2 | b1 >> 6``, ...,
    ``c7 = b4 & 31``), zero-filled to a whole group. ``<p>.weight__norms``:
    (N, n_blocks) float16. ``<p>.weight__meta``: 5 integers
    ``[N, n_blocks, B, total_codes, K]``. bits = 5. The centroids are not
    stored ("rebuilt from the bit width"): by default they are the seed's own,
    :func:`seed_codebook` ``(5, "hf_integration")``, kept as the tensor's
    custom ``codebook``; the ``codebook`` argument of the loaders picks
    another (see :func:`load_seed_tensors`).

Every inconsistency raises ValueError naming what was expected and found.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from . import format as fmt
from .codebook import MAX_BITS, MIN_BITS, check_bits, codebook as standard_codebook
from .hadamard import check_block_size
from .tensor import HLWQTensor
from .utils import naming_damaged_file

__all__ = ["SEED_FORMATS", "SEED_CODEBOOKS", "seed_codebook", "load_seed_tensors", "load_seed_into"]

logger = logging.getLogger(__name__)

FORMAT_V4 = "polar_engine_v4"
FORMAT_Q5 = "hlwq-q5"
SEED_FORMATS = (FORMAT_V4, FORMAT_Q5)
CONFIG_NAME = "polar_config.json"
DEFAULT_BLOCK_SIZE = 128
# Centroids within this fraction of their largest magnitude of the standard
# codebook are float32 roundings of it (ct_scaled * sqrt(B) costs ~1 ulp).
STANDARD_CODEBOOK_RTOL = 1e-6

# Centroids of hlwq-q5 layers (the format stores none): the loaders' ``codebook`` choices.
SEED_CODEBOOKS = ("seed", "seed-utils", "lloyd-max")
_SEED_VARIANT = {"seed": "hf_integration", "seed-utils": "utils", "lloyd-max": None}

# A quantized layer's tensors per format: all required, but for v4 one of .ct_scaled / .ct.
_SUFFIXES = {
    FORMAT_V4: (".codes", ".norms", ".ct_scaled", ".ct"),
    FORMAT_Q5: (".weight__packed", ".weight__norms", ".weight__meta"),
}


# ---------------------------------------------------------------------------
# The seed's own centroids (what its hlwq-q5 codes were chosen against).
# ---------------------------------------------------------------------------

_SEED_ITERATIONS = 100
_SEED_RANGE = 4.0


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """N(0, 1) CDF in float64, in the form of the Cephes ``ndtr`` (what scipy's ``norm.cdf`` runs)."""
    t = x * math.sqrt(0.5)
    z = t.abs()
    tail = 0.5 * torch.special.erfc(z)
    return torch.where(z < math.sqrt(0.5), 0.5 + 0.5 * torch.erf(t), torch.where(t > 0, 1.0 - tail, tail))


def _normal_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi)


def _cell_means(lo: torch.Tensor, hi: torch.Tensor, min_mass: float) -> torch.Tensor:
    """E[X | lo < X < hi] for X ~ N(0, 1), the cell's midpoint when its mass is <= ``min_mass``."""
    mass = _normal_cdf(hi) - _normal_cdf(lo)
    mean = (_normal_pdf(lo) - _normal_pdf(hi)) / mass
    return torch.where(mass > min_mass, mean, (lo + hi) / 2)


@functools.lru_cache(maxsize=None)
def _seed_centroids(bits: int, variant: str) -> tuple[float, ...]:
    n = 1 << bits
    # The initial boundaries are multiples of 8 / n: exact in float32 and float64.
    bounds = torch.linspace(-_SEED_RANGE, _SEED_RANGE, n + 1, dtype=torch.float64)
    if variant == "hf_integration":
        # Boundaries and centroids are float32 tensors in the seed; each cell
        # mean is a float64 (scipy) value rounded to float32 when stored, each
        # midpoint a float32 sum halved. The ends stay at -4 and +4.
        for _ in range(_SEED_ITERATIONS):
            c = _cell_means(bounds[:-1], bounds[1:], 1e-12).to(torch.float32)
            bounds[1:-1] = ((c[:-1] + c[1:]) / 2).to(torch.float64)
    else:  # utils: float64 throughout, open ends, rounded to float32 at the end.
        bounds[0], bounds[-1] = -math.inf, math.inf
        for _ in range(_SEED_ITERATIONS):
            c = _cell_means(bounds[:-1], bounds[1:], 1e-10)
            bounds[1:-1] = (c[:-1] + c[1:]) / 2
        c = c.to(torch.float32)
    return tuple(c.tolist())


def seed_codebook(bits: int, variant: str = "hf_integration") -> torch.Tensor:
    """The centroids the seed (polarengine) quantizes against, (2**bits,) float32.

    The seed does not use the converged Lloyd-Max codebook of N(0, 1)
    (:func:`hlwq_ops.codebook`): it runs a fixed 100 Lloyd iterations from
    ``2**bits`` equal cells on [-4, 4], each iteration setting every centroid
    to its cell's conditional mean ``(pdf(lo) - pdf(hi)) / (cdf(hi) - cdf(lo))``
    (the cell midpoint when the mass is tiny) and then every inner boundary to
    the midpoint of its two centroids. From 4 and more bits that is far from
    converged: at 5 bits its centroids are ~1.33x ours near 0 and differ by
    up to 0.33 (N(0, 1) MSE 0.00290 against 0.00250). Its codes (nearest
    centroid of its own codebook) reconstruct well only with its own
    centroids: read with ours, the error's MSE grows ~14x. Formats that do
    not store the centroids (``hlwq-q5``) therefore need this codebook. Two
    variants exist in the seed's source:

    - ``"hf_integration"`` (``polarengine_vllm/hf_integration.py``
      ``_get_centroids``, next to the big-endian 5-bit packer of ``hlwq-q5``):
      the outer boundaries stay at -4 and +4 (the tails beyond are ignored);
      boundaries and centroids are float32 tensors, the cell means float64;
      cells of mass <= 1e-12 take their midpoint. Reproduced with the same
      float32 roundings.
    - ``"utils"`` (``polarengine_vllm/utils.py`` ``get_centroids``): the outer
      boundaries are -inf and +inf after initialization, everything in
      float64, rounded to float32 at the end; cells of mass <= 1e-10 take
      their midpoint.

    The cell means are computed with torch in float64 (no scipy);
    deterministic, cached per (bits, variant). The normal CDF and density
    follow scipy's formulas, so the float32 result is the seed's up to float64
    rounding differences of the special functions: none, for bits 2..8 and
    both variants, against the procedures run with scipy 1.17.

    Args:
        bits: bit width, 2..8.
        variant: ``"hf_integration"`` or ``"utils"``.

    Returns:
        (2**bits,) float32, sorted ascending, a new tensor on the CPU.
    """
    check_bits(bits)
    if variant not in ("hf_integration", "utils"):
        raise ValueError(f"variant must be 'hf_integration' or 'utils', got {variant!r}")
    return torch.tensor(_seed_centroids(bits, variant), dtype=torch.float32)


def _check_codebook_choice(codebook: str) -> None:
    if codebook not in SEED_CODEBOOKS:
        raise ValueError(f"codebook must be one of {SEED_CODEBOOKS}, got {codebook!r}")


# ---------------------------------------------------------------------------
# One quantized layer, read and checked.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _SeedLayer:
    """A layer in HLWQ's packed form; ``in_features`` is None when the checkpoint does not say."""

    name: str
    qdata: torch.Tensor  # (N, n_blocks * B * bits / 8) uint8
    scale: torch.Tensor  # (N, n_blocks) float16
    bits: int
    block_size: int
    in_features: int | None
    codebook: torch.Tensor | None  # (2**bits,) float32, None = standard

    @property
    def out_features(self) -> int:
        return self.scale.shape[0]

    @property
    def padded_in_features(self) -> int:
        return self.scale.shape[1] * self.block_size

    def check_in_features(self, K: int) -> None:
        lo, hi = self.padded_in_features - self.block_size + 1, self.padded_in_features
        if not lo <= K <= hi:
            raise ValueError(
                f"{self.name}: in_features {K} does not fit {self.scale.shape[1]} blocks of "
                f"{self.block_size}; expected {lo}..{hi}"
            )

    def to_hlwq(self, K: int, dtype: torch.dtype) -> HLWQTensor:
        self.check_in_features(K)
        return HLWQTensor(
            self.qdata, self.scale, self.bits, self.block_size, (self.out_features, K), dtype, self.codebook
        )


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value % 1:
        raise ValueError(f"{what} must be an integer, found {value!r}")
    return int(value)


def _layer_meta(config: dict, prefix: str) -> dict:
    meta = config.get("layers", {}).get(prefix, {})
    if not isinstance(meta, dict):
        raise ValueError(f"{CONFIG_NAME}: layers[{prefix!r}] must be an object, found {meta!r}")
    return meta


def _configured_bits(config: dict, prefix: str) -> int | None:
    meta = _layer_meta(config, prefix)
    if "bits" in meta:
        return _as_int(meta["bits"], f"{CONFIG_NAME}: layers[{prefix!r}].bits")
    patterns = [p for p in config.get("bit_assignment", {}) if p in prefix]
    if patterns:
        best = max(patterns, key=len)
        return _as_int(config["bit_assignment"][best], f"{CONFIG_NAME}: bit_assignment[{best!r}]")
    for key in ("bits", "weight_bits"):
        if key in config:
            return _as_int(config[key], f"{CONFIG_NAME}: {key}")
    return None


def _configured_block_size(config: dict, prefix: str) -> int | None:
    meta = _layer_meta(config, prefix)
    if "block_size" in meta:
        return _as_int(meta["block_size"], f"{CONFIG_NAME}: layers[{prefix!r}].block_size")
    if "block_size" in config:
        return _as_int(config["block_size"], f"{CONFIG_NAME}: block_size")
    return None


def _configured_in_features(config: dict, prefix: str, N: int) -> int | None:
    meta = _layer_meta(config, prefix)
    if "out_features" in meta:
        out_features = _as_int(meta["out_features"], f"{CONFIG_NAME}: layers[{prefix!r}].out_features")
        if out_features != N:
            raise ValueError(f"{prefix}: {CONFIG_NAME} says out_features={out_features}, the tensors hold {N} rows")
    if "in_features" in meta:
        what = f"{CONFIG_NAME}: layers[{prefix!r}].in_features"
        in_features = _as_int(meta["in_features"], what)
        if in_features <= 0:
            raise ValueError(f"{what} must be positive, found {in_features}")
        return in_features
    return None


def _check_norms(name: str, norms: torch.Tensor) -> None:
    if norms.dtype != torch.float16 or norms.dim() != 2 or norms.shape[1] == 0:
        raise ValueError(f"{name}: expected 2-D float16 norms of at least one block a row, found {norms.dtype} of "
                         f"shape {tuple(norms.shape)}")
    bad = ~torch.isfinite(norms) | (norms < 0)
    if bool(bad.any()):
        n, b = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{name}: norms must be finite and >= 0, found {norms[n, b].item()} at row {n}, block {b}"
        )


def _check_centroids(name: str, c: torch.Tensor) -> None:
    if not c.is_floating_point() or c.dim() != 1:
        raise ValueError(f"{name}: expected 1-D float centroids, found {c.dtype} of shape {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{name}: centroids must be finite, found {c.tolist()}")
    if not bool((c[1:] > c[:-1]).all()):
        i = int((c[1:] <= c[:-1]).nonzero()[0])
        raise ValueError(
            f"{name}: centroids must be sorted ascending, found c[{i}]={c[i].item()} >= c[{i + 1}]={c[i + 1].item()}"
        )


def _v4_centroids(prefix: str, tensors: dict[str, torch.Tensor], block_size: int) -> torch.Tensor:
    """The unscaled centroids, (2**bits,) float32, from ``.ct`` and/or ``.ct_scaled``."""
    found = {}
    for suffix, factor in ((".ct", 1.0), (".ct_scaled", math.sqrt(block_size))):
        if suffix in tensors:
            if not tensors[suffix].is_floating_point():  # (checked as stored: converted, integers would pass)
                raise ValueError(f"{prefix}{suffix}: expected float centroids, found {tensors[suffix].dtype}")
            found[suffix] = tensors[suffix].to(torch.float64) * factor
    if not found:
        raise ValueError(f"{prefix}: missing tensor {prefix}.ct_scaled (or {prefix}.ct), expected with {prefix}.codes")
    for suffix, c in found.items():
        _check_centroids(prefix + suffix, c)
    if len(found) == 2:
        ct, scaled = found[".ct"], found[".ct_scaled"]
        if ct.shape != scaled.shape or (ct - scaled).abs().max() > STANDARD_CODEBOOK_RTOL * ct.abs().max():
            raise ValueError(
                f"{prefix}: .ct and .ct_scaled * sqrt({block_size}) disagree: {ct.tolist()} vs {scaled.tolist()}"
            )
    return next(iter(found.values())).to(torch.float32)


def _bits_of(prefix: str, n_centroids: int) -> int:
    bits = max(n_centroids.bit_length() - 1, 0)
    if n_centroids != 1 << bits or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"{prefix}: found {n_centroids} centroids, expected 2**bits for bits in {MIN_BITS}..{MAX_BITS}"
        )
    return bits


def _is_standard(c: torch.Tensor, bits: int) -> bool:
    std = standard_codebook(bits)
    return bool((c - std).abs().max() <= STANDARD_CODEBOOK_RTOL * std.abs().max())


def _v4_codes(prefix: str, codes: torch.Tensor, N: int, n_blocks: int, bits: int, B: int) -> torch.Tensor:
    """(N, n_blocks, B) int32 codes from the stored int8 codes or uint8 nibbles."""
    K_pad = n_blocks * B
    if codes.dim() == 2 and codes.shape == (N, K_pad) and codes.dtype in (torch.int8, torch.uint8):
        out = codes.to(torch.int32) & 0xFF
    elif codes.dim() == 2 and codes.shape == (N, K_pad // 2) and codes.dtype == torch.uint8 and bits <= 4:
        half = codes.view(N, n_blocks, B // 2).to(torch.int32)
        out = torch.cat([half & 0xF, half >> 4], dim=-1)
    else:
        nibbles = f" (or ({N}, {K_pad // 2}) uint8 nibbles)" if bits <= 4 else ""
        raise ValueError(
            f"{prefix}.codes: expected ({N}, {K_pad}) int8{nibbles} for {n_blocks} blocks of {B} "
            f"(from .norms), found {codes.dtype} of shape {tuple(codes.shape)}"
        )
    if out.numel() and int(out.max()) >= 1 << bits:
        raise ValueError(
            f"{prefix}.codes: codes must be in 0..{(1 << bits) - 1} for bits={bits}, found {int(out.max())}"
        )
    return out.view(N, n_blocks, B)


def _check_layer_block_size(prefix: str, B: int, source: str) -> None:
    """:func:`check_block_size` naming the layer and where its block size was read."""
    try:
        check_block_size(B)
    except ValueError as error:
        raise ValueError(f"{prefix}: {source}: {error}") from error


def _read_v4(prefix: str, tensors: dict[str, torch.Tensor], config: dict, codebook: str) -> _SeedLayer:
    del codebook  # v4 stores its centroids
    B = _configured_block_size(config, prefix) or DEFAULT_BLOCK_SIZE
    _check_layer_block_size(prefix, B, f"{CONFIG_NAME}'s block_size")
    c = _v4_centroids(prefix, tensors, B)
    bits = _bits_of(prefix, c.numel())
    configured = _configured_bits(config, prefix)
    if configured is not None and configured != bits:
        raise ValueError(f"{prefix}: {CONFIG_NAME} says bits={configured}, found {c.numel()} centroids (bits={bits})")
    norms = tensors[".norms"]
    _check_norms(prefix + ".norms", norms)
    N, n_blocks = norms.shape
    codes = _v4_codes(prefix, tensors[".codes"], N, n_blocks, bits, B)
    return _SeedLayer(
        name=prefix,
        qdata=fmt.pack_codes(codes, bits),
        scale=norms.contiguous(),
        bits=bits,
        block_size=B,
        in_features=_configured_in_features(config, prefix, N),
        codebook=None if _is_standard(c, bits) else c,
    )


def _unpack_big_endian_5bit(packed: torch.Tensor, total: int) -> torch.Tensor:
    """(ceil(total / 8) * 5,) uint8 stream, most significant bit first -> (total,) int32 codes."""
    groups = packed.view(-1, 5).to(torch.int64)
    word = (groups << torch.arange(32, -1, -8, device=packed.device)).sum(-1)  # 40 bits per group
    codes = (word[:, None] >> torch.arange(35, -1, -5, device=packed.device)) & 31
    return codes.reshape(-1)[:total].to(torch.int32)


def _read_q5(prefix: str, tensors: dict[str, torch.Tensor], config: dict, codebook: str) -> _SeedLayer:
    meta_t = tensors[".weight__meta"]
    if meta_t.numel() != 5 or meta_t.is_complex() or meta_t.dtype == torch.bool:
        raise ValueError(
            f"{prefix}.weight__meta: expected 5 integers [N, n_blocks, block_size, total_codes, K], "
            f"found {meta_t.dtype} of shape {tuple(meta_t.shape)}"
        )
    N, n_blocks, B, total, K = (_as_int(v, f"{prefix}.weight__meta") for v in meta_t.flatten().tolist())
    _check_layer_block_size(prefix, B, "weight__meta's block_size")
    configured_b = _configured_block_size(config, prefix)
    if configured_b is not None and configured_b != B:
        raise ValueError(f"{prefix}: {CONFIG_NAME} says block_size={configured_b}, weight__meta says {B}")
    configured_bits = _configured_bits(config, prefix)
    if configured_bits not in (None, 5):
        raise ValueError(f"{prefix}: format {FORMAT_Q5} stores 5-bit codes, {CONFIG_NAME} says bits={configured_bits}")
    norms = tensors[".weight__norms"]
    _check_norms(prefix + ".weight__norms", norms)
    if tuple(norms.shape) != (N, n_blocks):
        raise ValueError(
            f"{prefix}.weight__norms: expected shape ({N}, {n_blocks}) from weight__meta, found {tuple(norms.shape)}"
        )
    if total != N * n_blocks * B:
        raise ValueError(
            f"{prefix}.weight__meta: total_codes={total}, expected N * n_blocks * block_size = {N * n_blocks * B}"
        )
    packed = tensors[".weight__packed"]
    n_bytes = -(-total // 8) * 5
    if packed.dtype != torch.uint8 or packed.numel() != n_bytes:
        raise ValueError(
            f"{prefix}.weight__packed: expected {n_bytes} uint8 bytes for {total} 5-bit codes, "
            f"found {packed.numel()} {packed.dtype}"
        )
    codes = _unpack_big_endian_5bit(packed.reshape(-1), total).view(N, n_blocks, B)
    variant = _SEED_VARIANT[codebook]
    centroids = None if variant is None else seed_codebook(5, variant)  # a new tensor per layer
    layer = _SeedLayer(prefix, fmt.pack_codes(codes, 5), norms.contiguous(), 5, B, K, centroids)
    layer.check_in_features(K)
    configured_k = _configured_in_features(config, prefix, N)
    if configured_k is not None and configured_k != K:
        raise ValueError(f"{prefix}: {CONFIG_NAME} says in_features={configured_k}, weight__meta says {K}")
    return layer


# ---------------------------------------------------------------------------
# The checkpoint directory.
# ---------------------------------------------------------------------------


class _Checkpoint:
    """An open seed checkpoint: its config, and its tensors read on demand."""

    def __init__(self, path: Path, config: dict, handles: dict, files: dict[str, Path]):
        self.path, self.config, self._handles, self._files = path, config, handles, files
        self.format = config["format"]
        suffixes = _SUFFIXES[self.format]
        groups: dict[str, dict[str, str]] = {}
        self.plain_keys: list[str] = []
        for key in sorted(handles):
            suffix = next((s for s in suffixes if key.endswith(s)), None)
            if suffix is None:
                self.plain_keys.append(key)
            else:
                groups.setdefault(key[: -len(suffix)], {})[suffix] = key
        _check_format(path, self.format, bool(groups), self.plain_keys)
        required = [s for s in suffixes if s not in (".ct_scaled", ".ct")]
        plain = set(self.plain_keys)
        for prefix in sorted(groups):
            if prefix + ".weight" in plain:
                raise ValueError(
                    f"{path}: layer {prefix}'s weight is stored both quantized ({sorted(groups[prefix].values())}) "
                    f"and plain ({prefix}.weight); expected one of them"
                )
        for prefix in sorted(set(groups) | set(config.get("layers", {}))):
            missing = [prefix + s for s in required if s not in groups.get(prefix, {})]
            if missing:
                raise ValueError(
                    f"{path}: layer {prefix} is missing tensor(s) {missing}; "
                    f"format {self.format} expects {[prefix + s for s in suffixes]}"
                )
        self._groups = groups

    def layer_rows(self) -> dict[str, int]:
        """``{"<prefix>.weight": out_features}`` of every quantized layer, from its norms' header shape (no
        tensor data read)."""
        norms = ".norms" if self.format == FORMAT_V4 else ".weight__norms"
        rows = {}
        for prefix, keys in sorted(self._groups.items()):
            shape = self._handles[keys[norms]].get_slice(keys[norms]).get_shape()
            rows[prefix + ".weight"] = shape[0] if shape else -1
        return rows

    def plain_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{key: shape}`` of every plain tensor, from the headers."""
        return {key: tuple(self._handles[key].get_slice(key).get_shape()) for key in self.plain_keys}

    def get(self, key: str) -> torch.Tensor:
        with naming_damaged_file(self._files[key]):
            return self._handles[key].get_tensor(key)

    def layers(self, codebook: str = "seed") -> Iterator[tuple[str, _SeedLayer]]:
        """Yield (weight name, layer), one layer's tensors in memory at a time.

        ``codebook`` (one of :data:`SEED_CODEBOOKS`) gives hlwq-q5 layers their centroids.
        """
        read = _read_v4 if self.format == FORMAT_V4 else _read_q5
        for prefix, keys in sorted(self._groups.items()):
            tensors = {suffix: self.get(key) for suffix, key in keys.items()}
            yield prefix + ".weight", read(prefix, tensors, self.config, codebook)


def _check_format(path: Path, configured: str, has_layers: bool, plain_keys: list[str]) -> None:
    """Tensors of the other format would be taken for plain ones: loaded as nothing, or not at all."""
    other = FORMAT_Q5 if configured == FORMAT_V4 else FORMAT_V4
    found = [key for key in plain_keys if key.endswith(_SUFFIXES[other])]
    if found:
        raise ValueError(
            f"{path}: {CONFIG_NAME} says format {configured}, found tensors with the {other} suffixes "
            f"(e.g. {found[:3]}); expected {configured}'s {list(_SUFFIXES[configured])}"
        )
    if not has_layers:
        raise ValueError(
            f"{path}: {CONFIG_NAME} says format {configured}, no quantized layer found: expected tensors ending in "
            f"{list(_SUFFIXES[configured])}, found "
            + (f"only {len(plain_keys)} plain tensor(s), e.g. {plain_keys[:3]}" if plain_keys else "no tensor")
        )


def _read_config(path: Path) -> dict:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"expected a seed checkpoint directory with {CONFIG_NAME}, found none in {path}")
    try:
        config = json.loads(config_path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path}: expected a JSON object, found invalid JSON: {e}") from None
    if not isinstance(config, dict) or "format" not in config:
        raise ValueError(f"{config_path}: expected a JSON object with a 'format' key, found {config!r:.200}")
    if config["format"] not in SEED_FORMATS:
        raise ValueError(f"{config_path}: unknown format {config['format']!r}, expected one of {SEED_FORMATS}")
    for key in ("layers", "bit_assignment"):
        if not isinstance(config.get(key, {}), dict):
            raise ValueError(f"{config_path}: {key!r} must be an object, found {config[key]!r:.200}")
    return config


@contextlib.contextmanager
def _open_checkpoint(path: str | os.PathLike) -> Iterator[_Checkpoint]:
    path = Path(path)
    config = _read_config(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"expected *.safetensors files in {path}, found none")
    with contextlib.ExitStack() as stack:
        handles, file_of = {}, {}
        for file in files:
            with naming_damaged_file(file):
                handle = stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
            for key in handle.keys():
                if key in handles:
                    raise ValueError(f"{path}: tensor {key!r} is stored in more than one *.safetensors file")
                handles[key], file_of[key] = handle, file
        yield _Checkpoint(path, config, handles, file_of)


# ---------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------


def load_seed_tensors(
    path: str | os.PathLike, dtype: torch.dtype = torch.bfloat16, codebook: str = "seed"
) -> dict[str, HLWQTensor]:
    """Read every quantized layer of a seed checkpoint as an HLWQTensor (on the CPU).

    Args:
        path: the checkpoint directory (``polar_config.json`` + ``*.safetensors``).
        dtype: the logical dtype of the tensors (what ``dequantize`` and
            ``F.linear`` produce from them is ``dtype`` / the input's).
        codebook: the centroids of ``hlwq-q5`` layers, which that format does
            not store: ``"seed"`` (default), the seed's
            :func:`seed_codebook` ``(5, "hf_integration")``, from the module
            that holds the seed's hlwq-q5 packer; ``"seed-utils"``, its
            ``utils.get_centroids`` variant; ``"lloyd-max"``, our converged
            codebook (the HLWQTensors get ``codebook=None``). The checkpoint
            does not say which codebook its codes were chosen against; codes
            read with another codebook reconstruct worse. ``polar_engine_v4``
            layers always use their stored centroids.

    Returns:
        ``{"<prefix>.weight": HLWQTensor}``, each of shape (N, K): K from
        ``layers[prefix].in_features`` or the ``hlwq-q5`` meta, else K_pad
        (v4 does not store K; :func:`load_seed_into` takes it from the model).
        Plain tensors of the checkpoint are not returned.
    """
    if dtype not in fmt.ACTIVATION_DTYPES:  # an HLWQTensor's dtype: what its linear runs in
        raise TypeError(f"dtype must be one of {fmt.ACTIVATION_DTYPES}, got {dtype}")
    _check_codebook_choice(codebook)
    with _open_checkpoint(path) as ckpt:
        return {
            name: layer.to_hlwq(layer.padded_in_features if layer.in_features is None else layer.in_features, dtype)
            for name, layer in ckpt.layers(codebook)
        }


def load_seed_into(
    model: nn.Module, path: str | os.PathLike, strict: bool = True, codebook: str = "seed"
) -> list[str]:
    """Load a seed checkpoint into a model of the same architecture, without re-quantizing.

    A quantized layer whose module is an ``nn.Linear`` becomes its weight as an
    HLWQTensor (``nn.Parameter(requires_grad=False)``, K = the module's
    ``in_features``, dtype = the weight's). One on another module (the seed
    also quantizes embeddings) is dequantized into that module's plain weight.
    Plain tensors are copied into the matching parameters and persistent
    buffers like ``load_state_dict``; tensors on the meta device, and weights
    quantized before loading where the checkpoint keeps them plain, are
    replaced, ties kept. HLWQTensors go to the module's device (the CPU from meta).
    Non-persistent buffers (e.g. rotary ``inv_freq``) are in no checkpoint: a
    model built on meta must re-create them (a warning lists what is left).

    Args:
        model: e.g. a transformers model built on ``meta`` or the CPU.
        path: the checkpoint directory.
        strict: raise ValueError when a checkpoint tensor has no place in the
            model, a shape disagrees, a quantized linear's weight has a dtype
            an HLWQTensor cannot take, or a model tensor is not in the
            checkpoint; with False these are logged and skipped.
        codebook: the centroids of ``hlwq-q5`` layers, as in :func:`load_seed_tensors`.

    Returns:
        The names loaded, e.g. ``"model.layers.0.mlp.down_proj.weight"``.
    """
    _check_codebook_choice(codebook)
    loading = _Loading(model, _model_slots(model), strict)
    with _open_checkpoint(path) as ckpt:
        if strict:  # what the names and headers show, found before the model changes
            problems = _problems_before_loading(loading.slots, ckpt.layer_rows(), ckpt.plain_shapes())
            if problems:
                raise ValueError(f"the model is left as it was: {len(problems)} problem(s): " + "; ".join(problems[:5]))
        with _partly_loaded(loading.loaded):
            loading.load(ckpt, codebook)
            loading.check_complete()
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        # Non-persistent buffers (rotary inv_freq...) are in no checkpoint.
        logger.warning("%d model tensor(s) are still on the meta device, e.g. %s", len(still_meta), still_meta[:5])
    return loading.loaded


class _Loading:
    """:func:`load_seed_into` at work: what has been put in the model so far.

    The tensors written are kept by id (and alive, so ids stay unique). A name is loaded when its slot holds
    one of them at the end: a quantized weight is a new tensor, so a name tied to the one it replaced
    (embed_tokens to lm_head) still needs its own.
    """

    def __init__(self, model: nn.Module, slots: dict[str, tuple[nn.Module, str]], strict: bool):
        self.model, self.slots, self.strict = model, slots, strict
        self.written: dict[int, torch.Tensor] = {}
        self.loaded: list[str] = []

    def skip(self, message: str) -> None:
        if self.strict:
            raise ValueError(message)
        logger.warning("%s; skipped (strict=False)", message)

    def load(self, ckpt: _Checkpoint, codebook: str) -> None:
        """Each layer and plain tensor read and put in the model in turn."""
        for name, layer in ckpt.layers(codebook):
            if name not in self.slots:
                self.skip(f"quantized layer {name} has no matching parameter or buffer in the model")
                continue
            new = self._quantized(name, layer)
            if new is not None:
                self._wrote(name, new)
        for key in ckpt.plain_keys:
            if key not in self.slots:
                self.skip(f"checkpoint tensor {key} has no matching parameter or buffer in the model")
                continue
            target = getattr(*self.slots[key])
            value = ckpt.get(key)
            if value.shape != target.shape:
                self.skip(f"{key}: checkpoint has shape {tuple(value.shape)}, model expects {tuple(target.shape)}")
                continue
            self._wrote(key, _assign_plain(self.model, target, value))

    def check_complete(self) -> None:
        missing = [name for name, (m, attr) in self.slots.items() if id(getattr(m, attr)) not in self.written]
        if missing:
            self.skip(f"{len(missing)} model tensor(s) not in the checkpoint, e.g. {missing[:5]}")

    def _quantized(self, name: str, layer: _SeedLayer) -> torch.Tensor | None:
        """An nn.Linear's weight becomes the HLWQTensor; another module's tensor gets the dequantized weight.
        Returns the tensor now in the model (None: skipped)."""
        module, attr = self.slots[name]
        target = getattr(module, attr)
        if isinstance(module, nn.Linear) and attr == "weight":
            K = module.in_features
            problem = _quantized_mismatch(layer, module.out_features, K) or _unsupported_dtype(target.dtype)
            if problem:
                self.skip(f"{name}: {problem}")
                return None
            device = torch.device("cpu") if target.is_meta else target.device
            module.weight = new = nn.Parameter(layer.to_hlwq(K, target.dtype).to(device), requires_grad=False)
            return new
        K = target.shape[-1] if target.dim() == 2 else -1
        problem = _quantized_mismatch(layer, target.shape[0] if target.dim() == 2 else -1, K)
        if problem:
            self.skip(f"{name}: {problem} (model tensor of shape {tuple(target.shape)})")
            return None
        return _assign_plain(self.model, target, layer.to_hlwq(K, torch.float32).dequantize())

    def _wrote(self, name: str, new: torch.Tensor) -> None:
        self.written[id(new)] = new
        self.loaded.append(name)


def _problems_before_loading(
    slots: dict, layer_rows: dict[str, int], plain_shapes: dict[str, tuple[int, ...]]
) -> list[str]:
    """What :func:`load_seed_into` would raise for, seen from the names, the ties and the headers' shapes
    alone: a checkpoint tensor without a place in the model, a model tensor the checkpoint does not fill, a
    quantized layer whose rows or a plain tensor whose shape differ from the model's. A plain tensor fills
    every name of the tensor it is copied into (ties); a quantized linear weight becomes a new tensor, so it
    fills the names of its module's ``weight`` only."""
    names_of: dict[int, list[str]] = {}
    for name, (module, attr) in slots.items():
        names_of.setdefault(id(getattr(module, attr)), []).append(name)
    problems, filled = [], set()
    for name in [*layer_rows, *plain_shapes]:
        if name not in slots:
            kind = "quantized layer" if name in layer_rows else "checkpoint tensor"
            problems.append(f"{kind} {name} has no matching parameter or buffer in the model")
            continue
        module, attr = slots[name]
        target = getattr(module, attr)
        if name in layer_rows:
            linear = isinstance(module, nn.Linear) and attr == "weight"
            rows = module.out_features if linear else target.shape[0] if target.dim() == 2 else None
            if rows != layer_rows[name]:
                expected = rows if rows is not None else f"a 2-D tensor, found shape {tuple(target.shape)}"
                problems.append(f"{name}: checkpoint has {layer_rows[name]} output rows, model expects {expected}")
            if linear:  # (one module may have several names)
                problem = _unsupported_dtype(target.dtype)
                if problem:
                    problems.append(f"{name}: {problem}")
                filled.update(n for n, (m, a) in slots.items() if m is module and a == attr)
                continue
        elif plain_shapes[name] != tuple(target.shape):
            problems.append(f"{name}: checkpoint has shape {plain_shapes[name]}, model expects {tuple(target.shape)}")
        filled.update(names_of[id(target)])
    missing = [name for name in slots if name not in filled]
    if missing:
        problems.append(f"{len(missing)} model tensor(s) not in the checkpoint, e.g. {missing[:5]}")
    return problems


@contextlib.contextmanager
def _partly_loaded(loaded: list[str]) -> Iterator[None]:
    """An error after the model began to change says so."""
    try:
        yield
    except ValueError as e:
        if not loaded:
            raise
        raise ValueError(f"{e} (the model is partly loaded: {len(loaded)} tensor(s) were put in before this error; "
                         "build it again before retrying)") from e


def _quantized_mismatch(layer: _SeedLayer, N: int, K: int) -> str | None:
    if N != layer.out_features:
        return f"checkpoint has {layer.out_features} output rows, model expects {N}"
    if layer.in_features is not None and layer.in_features != K:
        return f"checkpoint has in_features={layer.in_features}, model expects {K}"
    try:
        layer.check_in_features(K)
    except ValueError as e:
        return str(e).removeprefix(f"{layer.name}: ")
    return None


def _unsupported_dtype(dtype: torch.dtype) -> str | None:
    """What a quantized linear's weight dtype (the HLWQTensor's, what its linear runs in) cannot be."""
    if dtype not in fmt.ACTIVATION_DTYPES:
        return f"the model's weight is {dtype}, a quantized linear's must be one of {fmt.ACTIVATION_DTYPES}"
    return None


def _model_slots(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every parameter and persistent buffer by qualified name, tied names included."""
    slots = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        names = list(module._parameters) + [b for b in module._buffers if b not in module._non_persistent_buffers_set]
        for attr in names:
            if getattr(module, attr) is not None:
                slots[f"{prefix}.{attr}" if prefix else attr] = (module, attr)
    return slots


@torch.no_grad()
def _assign_plain(model: nn.Module, target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Copy ``value`` into ``target``; a meta ``target``, or an HLWQTensor (a weight quantized before loading that
    the checkpoint keeps plain), is replaced wherever it is referenced. Returns the tensor that now holds ``value``."""
    if not target.is_meta and not isinstance(target, HLWQTensor):
        target.copy_(value)
        return target
    new = value.to(value.device if target.is_meta else target.device, target.dtype)
    if isinstance(target, nn.Parameter):
        new = nn.Parameter(new, requires_grad=target.requires_grad)
    for module in model.modules():
        for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
            if t is target:
                setattr(module, attr, new)
    return new
