"""Small helpers for reporting."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from safetensors import SafetensorError

__all__ = ["tensor_nbytes", "model_nbytes", "naming_damaged_file"]


def tensor_nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds in memory, counting the inner tensors of a subclass."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_nbytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (tied tensors counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_nbytes(t)
    return total


@contextlib.contextmanager
def naming_damaged_file(path: str | os.PathLike, error: type[ValueError] = ValueError) -> Iterator[None]:
    """safetensors' own errors inside the block (a truncated or damaged file) as ``error``, naming ``path``."""
    try:
        yield
    except SafetensorError as e:
        raise error(f"{path}: cannot read it as safetensors: {e}") from e
