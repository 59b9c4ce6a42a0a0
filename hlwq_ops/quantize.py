"""Quantize a Hugging Face safetensors checkpoint to HLWQ, one tensor at a time.

    python -m hlwq_ops.quantize --model llama-bf16/ --bits 5 --out llama-q5/
    python -m hlwq_ops.quantize --model llama-bf16/ --out llama-q5/ --bits-for '.*down_proj=6'

The output is what ``save_pretrained`` writes for a model loaded with
``TorchAoConfig(quant_type=hlwq(...))``, so ``AutoModelForCausalLM.from_pretrained(out)``
loads it with HLWQTensor weights (``import hlwq_ops`` first: it registers the config and
tensor classes with torchao's loaders):

- a quantized weight ``a.b.weight`` is stored as ``a.b._weight_qdata``
  (N, n_blocks * block_size * bits / 8) uint8 and ``a.b._weight_scale`` (N, n_blocks)
  float16 (torchao's ``flatten_tensor_state_dict``); other tensors are copied unchanged.
- Every shard's header metadata describes every tensor of the whole model:
  ``{"a.b.weight": '{"_type": "HLWQTensor", "_data": {...}, "_tensor_data_names": [...]}',
  "a.b.bias": '{"_type": "Tensor"}', "tensor_names": '[...all names...]', "format": "pt"}``.
  transformers merges the headers of all shards with ``dict.update``, so a per-shard
  ``tensor_names`` would keep only the last shard's list and the other shards' weights
  would not load.
- ``config.json`` gains ``quantization_config``, ``TorchAoConfig(quant_type=...).to_dict()``
  of ``hlwq(bits, block_size, scale_mode)``, or with ``--bits-for`` of an ``FqnToConfig``
  that names every quantized module exactly.

Memory: shapes and dtypes come from the safetensors headers and the model is built on the
meta device, so shards, index and metadata are all planned before any weight is read. Then
each tensor is read, quantized on ``--device`` and freed before the next one is read; the
packed results wait in memory until their shard is written. Peak host memory is about one
source tensor plus one output shard (``--max-shard-size``, 5GB by default).

Nothing appears in ``--out`` until the checkpoint is complete: it is written into a hidden
directory on the same filesystem and moved into place at the end; on any error (a weight
that cannot be quantized, say) that directory is removed and ``--out`` is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import json
import logging
import re
import shutil
import struct
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
from torchao.quantization import FqnToConfig
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from transformers.quantizers.base import get_keys_to_not_convert
from transformers.quantizers.quantizers_utils import should_convert_module

from .codebook import check_bits
from .config import HLWQConfig
from .tensor import HLWQTensor
from .utils import naming_damaged_file

__all__ = ["CheckpointError", "main", "parse_size", "quantize_checkpoint"]

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
# the dtypes an HLWQ linear runs in (a float64 weight is written unchanged, with its reason logged)
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
# Files not copied to the output: weights in any format and their indexes.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".index.json")
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
SIZE_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


class CheckpointError(ValueError):
    """The input or output cannot be used (the message says why): a directory, or a tensor that
    cannot be quantized."""


# -- what is in the checkpoint --------------------------------------------------


@dataclass(frozen=True)
class SourceTensor:
    """One tensor of the input checkpoint, as its safetensors header describes it."""

    name: str
    file: Path
    dtype: str  # safetensors spelling: "BF16", "F32", ...
    shape: tuple[int, ...]
    nbytes: int


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        start = f.read(8)
        size = path.stat().st_size
        if len(start) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (expected an 8-byte header length, "
                                  f"the file holds {size} bytes)")
        (length,) = struct.unpack("<Q", start)
        if length > size - 8:
            raise CheckpointError(f"{path}: not a safetensors file or truncated (its header claims {length} bytes, "
                                  f"the file holds {size - 8} after the length)")
        header = _json(f.read(length), f"{path}'s safetensors header")
    if not isinstance(header, dict) or not all(isinstance(v, dict) for v in header.values()):
        raise CheckpointError(f"{path}: expected a safetensors header (a JSON object of tensor entries), "
                              f"found {str(header)[:200]}")
    _check_entries(path, header, size - 8 - length)
    return header


def _check_entries(path: Path, header: dict, data_bytes: int) -> None:
    """Every tensor entry has a dtype, a shape and offsets within the file's data (a cut file is found here,
    before any shard is written, not when its tensors are read)."""
    def ints(value, n=None):
        return isinstance(value, list) and (n is None or len(value) == n) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)

    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets")
        if not (isinstance(info.get("dtype"), str) and ints(info.get("shape")) and ints(offsets, 2)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{path}: tensor {name!r} has no valid safetensors entry (dtype, shape, "
                                  f"data_offsets), found {str(info)[:200]}")
        if offsets[1] > data_bytes:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {offsets[1]} of the data, "
                                  f"the file holds {data_bytes}")


def _json(text: str | bytes, what: str):
    """Parsed JSON, or a CheckpointError naming ``what`` and where the text is broken."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{what} is not valid JSON: {e}") from None


def source_tensors(model_dir: Path) -> list[SourceTensor]:
    """Every tensor of the checkpoint, file by file, in on-disk order."""
    index = model_dir / INDEX_NAME
    if index.is_file():
        weight_map = _json(index.read_bytes(), str(index))
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: expected a 'weight_map' object of tensor name -> file name")
        files = list(dict.fromkeys(weight_map.values()))
    elif (model_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(
            f"{model_dir} has neither model.safetensors nor {INDEX_NAME} (only safetensors checkpoints are supported)"
        )
    tensors, found = [], {}  # found: name -> the file it is read from
    for file in files:
        if not (model_dir / file).is_file():
            raise CheckpointError(f"{index} names {file}, which is not in {model_dir}")
        header = read_header(model_dir / file)
        if "tensor_names" in (header.pop("__metadata__", None) or {}):
            raise CheckpointError(f"{model_dir / file} is already torchao-quantized")
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if name in found:  # (written twice, the output fails to load; transformers takes the last file's)
                raise CheckpointError(f"tensor {name} is stored in both {found[name]} and {file} of {model_dir}; "
                                      "expected each tensor once")
            found[name] = file
            start, end = info["data_offsets"]
            tensors.append(SourceTensor(name, model_dir / file, info["dtype"], tuple(info["shape"]), end - start))
    if index.is_file():  # (a tensor the index names but its file lacks: the output would load without it)
        absent = [(name, file) for name, file in weight_map.items() if found.get(name) != file]
        if absent:
            name, file = absent[0]
            raise CheckpointError(f"{index} names {len(absent)} tensor(s) their files do not hold, e.g. {name} in "
                                  f"{file} ({'found in ' + found[name] if name in found else 'in no file'})")
    return tensors


@dataclass
class Skeleton:
    """The model built from config.json on the meta device: which modules are what."""

    arch: str
    modules: dict[str, str]  # module name -> class name
    linears: set[str]
    output_embeddings: set[str]
    tied: dict[str, str]  # module -> the module its weight is tied to
    not_convert: list[str]  # transformers' TorchAoConfig skip patterns
    shapes: dict[str, tuple[int, ...]]  # state-dict name -> the shape config.json gives it
    rename: Callable[[str], tuple[str, str | None]]  # a checkpoint key -> the model's key, what merges it or None
    dropped: list[str]  # patterns of checkpoint keys transformers drops on load (e.g. multi-token prediction layers)

    def module_of(self, stored: str) -> str | None:
        """The model's module that the checkpoint's module name ``stored`` loads into, as ``from_pretrained`` renames
        keys (GPT-NeoX's ``embed_out`` is ``lm_head``) and adds or strips the base model's prefix (OPT's own
        checkpoints store ``decoder.*`` for ``model.decoder.*``); None where it is merged with others on load (a
        mixture-of-experts layer's experts into one 3-D parameter) or the model has no such module."""
        key, merged_by = self.rename(f"{stored}.weight")
        module = key.removesuffix(".weight")
        return module if merged_by is None and module in self.modules else None

    def drops(self, key: str) -> bool:
        """Whether ``from_pretrained`` drops the checkpoint key ``key`` (``_keys_to_ignore_on_load_unexpected``)."""
        return any(re.search(pattern, key) for pattern in self.dropped)


def build_skeleton(model_dir: Path, include_lm_head: bool) -> Skeleton | None:
    """Instantiate the architecture of config.json without weights; None if transformers cannot."""
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir)
        arch = (getattr(config, "architectures", None) or [""])[0]
        model_class = getattr(transformers, arch, None) if arch else None
        with torch.device("meta"):
            if model_class is None:
                model = transformers.AutoModelForCausalLM.from_config(config)
            else:
                model = model_class._from_config(config)
    except Exception as e:  # any model transformers cannot build: fall back to names, say why
        reason = f"{type(e).__name__}: {e}"
        logger.warning("hlwq: cannot build the model from config.json (%s); deciding by tensor names", reason)
        return None

    modules = dict(model.named_modules())
    output = model.get_output_embeddings()
    output_names = {name for name, m in modules.items() if output is not None and m is output}
    tied = {}
    for param, target in model.all_tied_weights_keys.items():
        a, b = param.rpartition(".")[0], target.rpartition(".")[0]
        tied[a], tied[b] = b, a
    # What TorchAoHfQuantizer._process_model_before_weight_loading skips.
    not_convert = set(get_keys_to_not_convert(model)) | set(model._keep_in_fp32_modules or [])
    if include_lm_head:
        not_convert -= output_names
    return Skeleton(
        arch=type(model).__name__,
        modules={name: type(m).__name__ for name, m in modules.items()},
        linears={name for name, m in modules.items() if isinstance(m, torch.nn.Linear)},
        output_embeddings=output_names,
        tied=tied,
        not_convert=sorted(not_convert),
        shapes={name: tuple(t.shape) for name, t in model.state_dict().items()},
        rename=_renaming(model),
        dropped=list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []),
    )


def _renaming(model: torch.nn.Module) -> Callable[[str], tuple[str, str | None]]:
    """How ``from_pretrained`` renames a checkpoint key for ``model``: its renamings and merges (transformers'
    conversion mapping, the same functions in 5.17 and 5.25), then the base model's prefix."""
    transforms = get_model_conversion_mapping(model)
    return functools.partial(
        rename_source_key,
        weight_renamings=[t for t in transforms if isinstance(t, WeightRenaming)],
        weight_converters=[t for t in transforms if isinstance(t, WeightConverter)],
        base_model_prefix=model.base_model_prefix or None,
        meta_state_dict=dict.fromkeys(model.state_dict(), True),
    )


_EMBEDDING_NAME = re.compile(r"(^|\.)(\w*embed\w*|wte|wpe)(\.|$)")
_OUTPUT_NAME = re.compile(r"(^|\.)(lm_head|embed_out|output)$")


def skip_reason(t: SourceTensor, module: str | None, skeleton: Skeleton | None, include_lm_head: bool,
                block_size: int) -> str | None:
    """Why the 2-D ``*.weight`` tensor ``t`` stays unquantized, or None to quantize it; ``module``: the model's module
    it loads into (:meth:`Skeleton.module_of`; without a skeleton, its stored name)."""
    if t.dtype not in FLOAT_DTYPES:
        return f"dtype {t.dtype} is not one of {sorted(FLOAT_DTYPES)}"
    if skeleton is not None:
        if module is None:
            stored = t.name.removesuffix(".weight")
            if skeleton.drops(t.name):
                return f"{skeleton.arch} drops it on load"
            return (f"{skeleton.arch} has no module that {stored!r} loads into (its key is merged with others on load, "
                    "or is not the model's)")
        if module not in skeleton.linears:
            return f"its module is a {skeleton.modules[module]}, not an nn.Linear"
        if module in skeleton.tied:
            return f"it is tied to {skeleton.tied[module]}.weight"
        if module in skeleton.output_embeddings and not include_lm_head:
            return "it is the output embedding (lm_head); pass --include-lm-head to quantize it"
        if not should_convert_module(module, skeleton.not_convert):
            return "transformers' TorchAoConfig leaves it unquantized (last module or _keep_in_fp32_modules)"
    elif _OUTPUT_NAME.search(module):
        if not include_lm_head:
            return "its name says output embedding (lm_head); pass --include-lm-head to quantize it"
    elif _EMBEDDING_NAME.search(module):
        return "its name says embedding"
    if t.shape[1] < block_size:  # as the quantize_ handler decides
        return f"in_features={t.shape[1]} is smaller than one block ({block_size})"
    return None


# -- the plan ---------------------------------------------------------------------


@dataclass
class Entry:
    """One source tensor and how it is written."""

    source: SourceTensor
    config: HLWQConfig | None  # None: written unchanged
    name: str  # the name written: the source's, or for a quantized weight its module's name in the model
    parts: dict[str, int]  # stored tensor name -> bytes
    metadata: str  # this tensor's JSON in the safetensors header

    @property
    def nbytes(self) -> int:
        return sum(self.parts.values())


def plan_entry(t: SourceTensor, config: HLWQConfig | None, name: str | None = None) -> Entry:
    """Predict the stored tensors and header JSON by quantizing a meta tensor (no data); ``name``: the name to
    write a quantized weight under (default: the source's)."""
    if config is None:
        return Entry(t, None, t.name, {t.name: t.nbytes}, json.dumps({"_type": torch.Tensor.__name__}))
    name = name or t.name
    weight = torch.empty(t.shape, dtype=FLOAT_DTYPES[t.dtype], device="meta")
    parts, metadata = flatten_tensor_state_dict({name: quantize_weight(weight, config)})
    return Entry(t, config, name, {k: v.numel() * v.element_size() for k, v in parts.items()}, metadata[name])


def quantize_weight(weight: torch.Tensor, config: HLWQConfig) -> HLWQTensor:
    return HLWQTensor.from_hp(weight, config.bits, config.block_size, scale_mode=config.scale_mode)


def plan(
    tensors: Sequence[SourceTensor],
    skeleton: Skeleton | None,
    config: HLWQConfig,
    bits_for: Sequence[tuple[re.Pattern, int]],
    include_lm_head: bool,
) -> list[Entry]:
    """Decide every tensor's fate and log (one line each) the linear-shaped weights left alone."""
    entries, used, shadowed_by, unmatched, loaded = [], set(), {}, [], set()
    for t in tensors:
        chosen, name = None, None
        if t.name.endswith(".weight") and len(t.shape) == 2:
            stored = t.name.removesuffix(".weight")
            # (named as the model names it: transformers' torchao loader finds a quantized weight's parts only under
            # the model's own names, and --bits-for names the model's modules)
            module = stored if skeleton is None else skeleton.module_of(stored)
            loaded.add(module)
            reason = skip_reason(t, module, skeleton, include_lm_head, config.block_size)
            if reason is not None:
                logger.info("hlwq: not quantizing %s: %s", t.name, reason)
                if skeleton is not None and module is None and not _OUTPUT_NAME.search(stored) \
                        and not skeleton.drops(t.name):
                    unmatched.append(t)  # (an output embedding's own warning is below)
            else:
                matching = [i for i, (pattern, _) in enumerate(bits_for) if pattern.fullmatch(module)]
                rule = matching[0] if matching else None  # (the first rule matching a module wins)
                used.add(rule)
                for later in matching[1:]:
                    shadowed_by.setdefault(later, rule)
                bits = config.bits if rule is None else bits_for[rule][1]
                chosen, name = HLWQConfig(bits, config.block_size, config.scale_mode), f"{module}.weight"
        elif len(t.shape) > 2 and t.dtype in FLOAT_DTYPES:
            # (transformers 5 stores a mixture-of-experts layer's experts so: most of such a model's weights)
            logger.warning("hlwq: not quantizing %s: a %d-D tensor (e.g. fused mixture-of-experts weights); only "
                           "nn.Linear weights are quantized", t.name, len(t.shape))
        entries.append(plan_entry(t, chosen, name))
    if include_lm_head and skeleton is not None:
        for module in sorted(skeleton.output_embeddings & skeleton.tied.keys()):
            logger.warning("hlwq: --include-lm-head: %s.weight is tied to %s.weight (an embedding) and stays "
                           "unquantized", module, skeleton.tied[module])
        for module in sorted(skeleton.output_embeddings - skeleton.tied.keys() - loaded):
            logger.warning("hlwq: --include-lm-head: the checkpoint has no tensor that loads into %s.weight (%s's "
                           "output embedding), so there is none to quantize", module, skeleton.arch)
    if unmatched:
        logger.warning("hlwq: %d linear-shaped weight(s) (%s, e.g. %s) stay unquantized: %s has no modules they "
                       "load into (transformers merges their keys on load, e.g. a mixture-of-experts layer's experts "
                       "into one 3-D tensor)", len(unmatched), _size(sum(t.nbytes for t in unmatched)),
                       unmatched[0].name, skeleton.arch)
    for i, (pattern, _) in enumerate(bits_for):
        if i in used:
            continue
        if i in shadowed_by:  # (it matches, but never first)
            logger.warning("hlwq: --bits-for %r is never applied: an earlier rule takes every module it matches "
                           "(e.g. %r; the first rule matching a module's whole name wins)", pattern.pattern,
                           bits_for[shadowed_by[i]][0].pattern)
        else:
            logger.warning("hlwq: --bits-for %r matches no quantized module's whole name", pattern.pattern)
    return entries


def check_shapes(entries: Sequence[Entry], skeleton: Skeleton | None) -> None:
    """Every weight to quantize has the shape config.json gives it. ``from_pretrained`` of the input refuses
    another shape; the quantized copy would load into a linear resized to fit, and fail later (or run as a
    different model under this config). (Tensors left as they are may be converted on load -- a MoE's experts
    are transposed -- and are not compared.)"""
    for e in entries:
        t = e.source
        expected = skeleton.shapes.get(e.name) if e.config and skeleton is not None else None
        if expected is not None and expected != t.shape:
            raise CheckpointError(f"{t.file}: tensor {t.name} has shape {list(t.shape)}, but config.json's "
                                  f"{skeleton.arch} has it as {list(expected)}")


def split_shards(entries: Sequence[Entry], max_bytes: int) -> list[list[Entry]]:
    """Consecutive entries, a new shard whenever the next would pass ``max_bytes``."""
    shards, size = [[]], 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def quantization_config(entries: Sequence[Entry], config: HLWQConfig, per_module: bool) -> dict:
    """config.json's ``quantization_config``: ``TorchAoConfig(quant_type=...).to_dict()``."""
    quant_type = config
    if per_module:
        quant_type = FqnToConfig({e.name.removesuffix(".weight"): e.config for e in entries if e.config})
    return json.loads(json.dumps(transformers.TorchAoConfig(quant_type=quant_type).to_dict()))


# -- reading, quantizing, writing ----------------------------------------------------


def read_tensor(f, name: str) -> torch.Tensor:
    """One tensor from an open safetensors file (tests wrap this to count live tensors)."""
    return f.get_tensor(name)


def read_in_order(entries: Sequence[Entry]) -> Iterator[tuple[Entry, torch.Tensor]]:
    for path, group in groupby(entries, key=lambda e: e.source.file):
        with naming_damaged_file(path, CheckpointError), safe_open(path, framework="pt") as f:
            for e in group:
                yield e, read_tensor(f, e.source.name)


def convert(e: Entry, weight: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """The stored tensors of one entry: the weight itself, or its flattened HLWQTensor on the CPU."""
    if e.config is None:
        return {e.name: weight}
    try:
        quantized = quantize_weight(weight.to(device), e.config).to("cpu")
    except ValueError as err:  # e.g. a NaN or Inf weight
        raise CheckpointError(f"{e.source.name} in {e.source.file}: cannot quantize: {err}") from err
    parts, metadata = flatten_tensor_state_dict({e.name: quantized})
    if metadata[e.name] != e.metadata or parts.keys() != e.parts.keys():
        raise RuntimeError(f"{e.name}: planned {e.metadata}, quantization gave {metadata[e.name]}")
    return parts


def write_shards(shards: list[list[Entry]], out_dir: Path, device: torch.device) -> list[str]:
    """Write every shard; return their file names."""
    n = len(shards)
    names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    entries = [e for shard in shards for e in shard]
    header = {e.name: e.metadata for e in entries}
    header["tensor_names"] = json.dumps([e.name for e in entries])
    header["format"] = "pt"
    with logging_redirect_tqdm(), tqdm(total=len(entries), unit="tensor", desc="hlwq: quantizing") as bar:
        for name, shard in zip(names, shards):
            stored = {}
            for e, weight in read_in_order(shard):
                stored.update(convert(e, weight, device))
                del weight  # before the next read: one source tensor at a time
                bar.update()
            save_file(stored, out_dir / name, metadata=header)
            del stored
    return names


def write_index(shards: list[list[Entry]], names: list[str], out_dir: Path) -> None:
    weight_map = {part: name for name, shard in zip(names, shards) for e in shard for part in e.parts}
    total_size = sum(e.nbytes for shard in shards for e in shard)
    total_parameters = sum(torch.Size(e.source.shape).numel() for shard in shards for e in shard)
    index = {"metadata": {"total_parameters": total_parameters, "total_size": total_size}, "weight_map": weight_map}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A new directory to write the checkpoint into: moved to ``out_dir`` when the block ends
    without error, removed in any case, so a failure leaves ``out_dir`` as it was.

    It is made on ``out_dir``'s filesystem so that moving it is a rename: beside a new
    ``out_dir`` (then renamed to it), or inside an existing one (check_dirs allows a directory
    without weights; the files are then moved up one by one).
    """
    out = out_dir.resolve()
    exists = out.is_dir()
    staging = (out if exists else out.parent) / f".{out.name}.{uuid.uuid4().hex[:8]}.partial"
    made = [p for p in staging.parents if not p.exists()]  # new parents, deepest first: removed on a failure
    staging.mkdir(parents=True)
    try:
        yield staging
        if exists:
            for path in sorted(staging.iterdir()):
                path.replace(out / path.name)
        else:
            staging.rename(out)
        made = []
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in made:
            with contextlib.suppress(OSError):
                parent.rmdir()


def copy_other_files(model_dir: Path, out_dir: Path) -> None:
    """Copy tokenizer, generation config, chat template, ...: every top-level file but weights and config.json."""
    for path in sorted(model_dir.iterdir()):
        if path.name == "config.json" or path.name.startswith(".") or path.name.endswith(WEIGHT_SUFFIXES):
            continue
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
        else:
            logger.info("hlwq: not copying %s (not a regular top-level file)", path)


def quantize_checkpoint(
    model_dir: str | Path,
    out_dir: str | Path,
    config: HLWQConfig | None = None,
    *,
    bits_for: Sequence[tuple[str | re.Pattern, int]] = (),
    include_lm_head: bool = False,
    device: str | torch.device | None = None,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Quantize the linear weights of a safetensors checkpoint, one tensor at a time.

    Args:
        model_dir: a Hugging Face checkpoint: config.json and model.safetensors or shards
            with model.safetensors.index.json.
        out_dir: where to write the quantized checkpoint (created; must hold no .safetensors).
            Written only once complete: on an error it is left as it was.
        config: bits, block_size and scale_mode for every quantized weight (default Q5).
        bits_for: (regex, bits) overrides; the first regex that matches a module's whole
            name (as ``re.fullmatch``, like FqnToConfig's ``re:`` keys) gives its bits.
        include_lm_head: quantize the output embedding too (unless tied to the input one).
        device: where each weight is quantized (default cuda if available); results
            come back to the CPU.
        max_shard_size: bytes per output shard, or a string such as "5GB" or "500MiB".

    Returns:
        ``out_dir`` as a Path.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = config or HLWQConfig()
    bits_for = [(re.compile(p) if isinstance(p, str) else p, b) for p, b in bits_for]
    for _, bits in bits_for:
        check_bits(bits)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    max_bytes = parse_size(max_shard_size) if isinstance(max_shard_size, str) else max_shard_size

    model_config = check_dirs(model_dir, out_dir)
    tensors = source_tensors(model_dir)
    skeleton = build_skeleton(model_dir, include_lm_head)
    entries = plan(tensors, skeleton, config, bits_for, include_lm_head)
    check_shapes(entries, skeleton)
    shards = split_shards(entries, max_bytes)
    quantized = [e for e in entries if e.config]
    if not quantized:
        raise CheckpointError(f"{model_dir}: no tensor to quantize (each linear-shaped weight's reason is logged "
                              f"at INFO level; e.g. block_size={config.block_size} against the layers' in_features)")
    logger.info(
        "hlwq: quantizing %d of %d tensors on %s: %s -> %s in %d shard(s)",
        len(quantized),
        len(entries),
        device,
        _size(sum(e.source.nbytes for e in entries)),
        _size(sum(e.nbytes for e in entries)),
        len(shards),
    )

    with staged(out_dir) as staging:
        names = write_shards(shards, staging, device)
        if len(shards) > 1:
            write_index(shards, names, staging)
        model_config["quantization_config"] = quantization_config(entries, config, per_module=bool(bits_for))
        (staging / "config.json").write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
        copy_other_files(model_dir, staging)
    return out_dir


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.2f} MB"


def check_dirs(model_dir: Path, out_dir: Path) -> dict:
    """Check both directories; return the parsed config.json."""
    if not model_dir.is_dir():
        raise CheckpointError(f"--model {model_dir}: no such directory")
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"--model {model_dir}: no config.json (expected a Hugging Face checkpoint)")
    model_config = _json((model_dir / "config.json").read_bytes(), str(model_dir / "config.json"))
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{model_dir / 'config.json'}: expected a JSON object, found {str(model_config)[:200]}")
    quantized = model_config.get("quantization_config")  # (null: none)
    if quantized is not None:
        method = quantized.get("quant_method", "?") if isinstance(quantized, dict) else quantized
        raise CheckpointError(f"--model {model_dir} is already quantized (quant_method={method})")
    if out_dir.resolve() == model_dir.resolve():
        raise CheckpointError("--out must differ from --model")
    if out_dir.exists() and (not out_dir.is_dir() or any(_checkpoint_file(p) for p in out_dir.iterdir())):
        # (an index left there would name shards this run does not write; another model's config would be lost)
        raise CheckpointError(f"--out {out_dir} already holds a checkpoint (config.json, weights or an index) or is "
                              "a file; choose an empty directory")
    above = next(p for p in out_dir.resolve().parents if p.exists())
    if not above.is_dir():
        raise CheckpointError(f"--out {out_dir}: {above} is a file, not a directory")
    out = out_dir.resolve()
    for folder in (out, out.parent):  # (where staged() makes them)
        for left in sorted(folder.glob(f".{glob.escape(out.name)}.*.partial")) if folder.is_dir() else ():
            logger.warning("hlwq: %s was left by a run that was killed before it could clean up (or is another run's, "
                           "still going); this run does not use it", left)
    return model_config


def _checkpoint_file(path: Path) -> bool:
    return path.name == "config.json" or path.name.endswith(WEIGHT_SUFFIXES)


# -- command line ---------------------------------------------------------------------


def parse_size(text: str) -> int:
    """Bytes in "5GB" (10**9), "500MiB" (2**20 each), "1000000"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", text)
    nbytes = 0  # (not a size, or an unknown unit)
    if match and match.group(2).upper() in SIZE_UNITS:
        nbytes = int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])
    if nbytes < 1:  # (also "0.1": less than a byte)
        raise ValueError(f"expected a positive size such as 5GB, 500MB or 2GiB (at least a byte), got {text!r}")
    return nbytes


def _arg(parse):
    """Turn a parser's ValueError into argparse's usage error with the same message."""

    def wrapped(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def parse_bits(text: str) -> int:
    try:
        bits = int(text)
    except ValueError:
        raise ValueError(f"bits must be an integer in 2..8, got {text!r}") from None
    check_bits(bits)
    return bits


def parse_bits_for(text: str) -> tuple[re.Pattern, int]:
    """``'.*down_proj=6'`` -> (compiled regex, 6)."""
    pattern, sep, bits = text.rpartition("=")
    if not sep or not pattern:
        raise ValueError(f"expected REGEX=BITS such as '.*down_proj=6', got {text!r}")
    if pattern.startswith("re:"):  # (FqnToConfig's key syntax, which the README shows for quantize_)
        raise ValueError(f"expected a plain regex, without FqnToConfig's 're:' prefix, got {text!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{pattern!r} in {text!r} is not a valid regex: {e}") from None
    return compiled, parse_bits(bits)


def parse_block_size(text: str) -> int:
    block_size = int(text) if text.isdigit() else text
    HLWQConfig(block_size=block_size)
    return block_size


def parse_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise ValueError(f"{text!r} is not a device: {e}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"expected cpu or cuda, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("cuda was asked for but torch sees no CUDA device")
    return device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hlwq_ops.quantize",
        description="Quantize the linear weights of a Hugging Face safetensors checkpoint to HLWQ, layer by layer.",
    )
    p.add_argument("--model", required=True, type=Path, help="input checkpoint directory")
    p.add_argument("--out", required=True, type=Path, help="output directory (new, or one without a checkpoint)")
    p.add_argument("--bits", type=_arg(parse_bits), default=5, help="code width, 2..8 (default 5)")
    p.add_argument("--block-size", type=_arg(parse_block_size), default=128,
                   help="weights per block, a power of two from 32 to 1024 (default 128, which the fastest GPU "
                        "kernels need)")
    p.add_argument("--scale-mode", choices=("search", "lsq", "norm"), default="search", help="default search")
    p.add_argument(
        "--bits-for",
        type=_arg(parse_bits_for),
        action="append",
        default=[],
        metavar="REGEX=BITS",
        help="bits for modules whose whole name matches REGEX, e.g. '.*down_proj=6'; repeatable, first match wins",
    )
    p.add_argument("--include-lm-head", action="store_true",
                   help="quantize lm_head too (default: keep it); a head tied to the input embedding stays as it is")
    p.add_argument("--device", type=_arg(parse_device), default=None, help="cpu or cuda (default cuda if available)")
    p.add_argument("--max-shard-size", type=_arg(parse_size), default="5GB", help="per output shard (default 5GB)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.setLevel(logging.INFO)
    try:
        out = quantize_checkpoint(
            args.model,
            args.out,
            HLWQConfig(args.bits, args.block_size, args.scale_mode),
            bits_for=args.bits_for,
            include_lm_head=args.include_lm_head,
            device=args.device,
            max_shard_size=args.max_shard_size,
        )
    except CheckpointError as e:
        parser.error(str(e))
    logger.info("hlwq: wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
