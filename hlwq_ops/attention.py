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

:func:`packed_decode_attention` puts it behind transformers' ``"sdpa"`` attention for a
``with`` block (``GraphDecoder(packed_attention=True)`` decodes within one); every other call (a prompt, a mask
per head, a position bias, a soft cap) goes to transformers' SDPA attention as before.
The name stays ``"sdpa"``: model code that tests it (Falcon's, transformers 5.17, picks
its own eager attention under any other name) and the mask built for it are unchanged.

Measured on an H100 (Llama-3-8B shape, batch 1, ``benchmarks/RESULTS.md`` 72), cuDNN attends the
packed queries with a slower kernel than the repeated heads (11.1 us a layer against 7.9), which
costs more than the copies save in a Q5 step: hence off by default in ``GraphDecoder``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

__all__ = ["packed_decode_attention", "packed_decode_sdpa"]

# keyword arguments under which transformers' SDPA attention does more than plain SDPA (a bias, a soft cap, the
# weights returned, attention sinks): such a call is left to it
_NOT_PLAIN = ("position_bias", "softcap", "output_attentions", "s_aux", "sinks")


def _packable(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
              kwargs: dict) -> bool:
    """One query position of a grouped-query layer, with one mask row for every head."""
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


def _uses_sdpa(model: torch.nn.Module) -> bool:
    """Whether a config of the model or of its modules (or one of their sub-configs) asks for SDPA attention."""
    seen: set[int] = set()

    def asks(config: PretrainedConfig) -> bool:
        if id(config) in seen:
            return False
        seen.add(id(config))
        subs = (getattr(config, name, None) for name in getattr(config, "sub_configs", {}))
        return config._attn_implementation == "sdpa" or any(
            asks(sub) for sub in subs if isinstance(sub, PretrainedConfig))

    configs = (getattr(holder, "config", None) for holder in (model, *model.modules()))
    return any(asks(config) for config in configs if isinstance(config, PretrainedConfig))


@contextmanager
def packed_decode_attention(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, transformers' ``"sdpa"`` attention is :func:`packed_decode_sdpa`.

    A no-op for a model that asks for no SDPA attention, or where ``"sdpa"`` is already
    not transformers' own function (someone's override is left alone). The swap is the
    process's, not the model's, while the block lasts (other models' SDPA layers in other
    threads attend one position the same way meanwhile, which computes the same). A step
    compiled within the block is traced with it: run it within such a block too (dynamo
    guards on the function, and would trace it again otherwise)."""
    interface = ALL_ATTENTION_FUNCTIONS
    if not _uses_sdpa(model) or interface["sdpa"] is not sdpa_attention_forward:
        yield
        return
    # (transformers' interface: an override of this instance, over the class's registry; put back as it was)
    overridden = "sdpa" in interface._local_mapping
    interface["sdpa"] = packed_decode_sdpa
    try:
        yield
    finally:
        if overridden:
            interface["sdpa"] = sdpa_attention_forward
        else:
            del interface["sdpa"]
