"""Small helpers for reporting."""

from __future__ import annotations

import torch

__all__ = ["tensor_nbytes", "model_nbytes"]


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
