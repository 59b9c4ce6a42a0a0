"""Attention of one query position against a grouped-query cache, without copying the cache's heads.

transformers' SDPA attention (5.17 and 5.25, compiled) gives a grouped-query layer's
step the cache's key and value heads repeated once per query head: two copies of the
whole static cache a layer and a step (Llama-3-8B shape, batch 1, a 384-position
cache: 64 kernels of 3.2 us a step on an H100, RESULTS 49, 5% of the step; the copy
grows with the cache). transformers asks SDPA for ``enable_gqa`` only without a mask:
with one, SDPA's flash and memory-efficient kernels refuse it. At one query position
the ``groups`` query heads of a key/value head are instead that head's ``groups``
queries: ``(B, H, 1, D)`` read as ``(B, H / groups, groups, D)`` attends the cache as
it is, each query with the step's one mask row (transformers 5.25 does the same
eagerly, not while compiling).

:func:`packed_decode_attention` switches a model's SDPA layers to it for a ``with``
block (``GraphDecoder`` decodes within one); every other call (a prompt, a mask per
head, a position bias, a soft cap) goes to transformers' SDPA attention as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["PACKED_DECODE", "packed_decode_attention", "packed_decode_sdpa"]

PACKED_DECODE = "hlwq_packed_decode_sdpa"

# keyword arguments under which transformers' SDPA attention does more than plain SDPA (a bias, a soft cap, the
# weights returned, attention sinks): such a call is left to it
_NOT_PLAIN = ("position_bias", "softcap", "output_attentions", "s_aux", "sinks")


def _packable(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
              kwargs: dict) -> bool:
    """One query position of a grouped-query layer, with one mask row for every head (or none given)."""
    groups = getattr(module, "num_key_value_groups", 1)
    return (
        isinstance(groups, int) and groups > 1 and query.dim() == 4 and query.shape[2] == 1
        and query.shape[1] == key.shape[1] * groups and mask is not None
        and mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1
        and all(kwargs.get(name) is None or kwargs.get(name) is False for name in _NOT_PLAIN)
    )


def packed_decode_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (B, H, L, D) query, (B, H_kv, S, D) key and value -> (B, L, H, D_v).

    At one query position with a mask shared by the heads, SDPA on the query heads of
    each key/value head as its queries; otherwise transformers' SDPA attention.
    (Without a mask transformers already asks SDPA for ``enable_gqa``.)"""
    if not _packable(module, query, key, attention_mask, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    packed = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def _register() -> None:
    """Make :data:`PACKED_DECODE` a name transformers' layers and mask builders accept (idempotent)."""
    AttentionInterface.register(PACKED_DECODE, packed_decode_sdpa)
    AttentionMaskInterface.register(PACKED_DECODE, sdpa_mask)


def _configs(model: torch.nn.Module) -> list[PretrainedConfig]:
    """The model's configs and their sub-configs, each before its own sub-configs, with the configs its modules
    hold (a layer reads its attention implementation from its own)."""
    found: dict[int, PretrainedConfig] = {}

    def walk(config: PretrainedConfig) -> None:
        if id(config) in found:
            return
        found[id(config)] = config
        for name in getattr(config, "sub_configs", {}):
            sub = getattr(config, name, None)
            if isinstance(sub, PretrainedConfig):
                walk(sub)

    for holder in (model, *model.modules()):
        config = getattr(holder, "config", None)
        if isinstance(config, PretrainedConfig):
            walk(config)
    return list(found.values())


def _assign(implementations: list[tuple[PretrainedConfig, str | None]]) -> None:
    """Set each config's attention implementation, parents first: setting a config sets its sub-configs too, which
    their own entries, later in the list, then set back."""
    for config, implementation in implementations:
        config._attn_implementation = implementation


@contextmanager
def packed_decode_attention(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the model's layers on SDPA attend one query position as :func:`packed_decode_sdpa` does.

    Only configs set to ``"sdpa"`` change; all are put back on leaving. A step compiled
    within the block is traced with it: run it within such a block too (dynamo guards on
    the name, and would trace it again otherwise)."""
    before = [(config, config._attn_implementation) for config in _configs(model)]
    if not any(implementation == "sdpa" for _, implementation in before):
        yield
        return
    _register()
    _assign([(config, PACKED_DECODE if name == "sdpa" else name) for config, name in before])
    try:
        yield
    finally:
        _assign(before)
