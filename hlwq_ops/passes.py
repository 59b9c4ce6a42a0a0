"""An Inductor graph pass that computes each activation rotation once.

``hlwq.linear`` decomposes into ``hlwq.fwht`` + ``hlwq.linear_rotated``, so the
q/k/v (or gate/up) projections of one input put identical ``hlwq.fwht`` calls
in the graph. AOTAutograd eliminates common subexpressions only when it
partitions a training graph; an inference graph reaches Inductor with all of
them, and Inductor keeps every call to an opaque op. This post-grad pass
merges ``hlwq.fwht`` calls with identical arguments: the graph is functional
there, so the same argument node means the same value.
"""

from __future__ import annotations

import torch
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

__all__ = ["dedup_fwht", "install"]


def dedup_fwht(graph: torch.fx.Graph) -> int:
    """Replace repeated ``hlwq.fwht(x, B)`` calls by the first one; return how many were removed."""
    first: dict[tuple, torch.fx.Node] = {}
    removed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.hlwq.fwht.default:
            continue
        key = (node.args, tuple(sorted(node.kwargs.items())))
        if key in first:
            node.replace_all_uses_with(first[key])
            graph.erase_node(node)
            removed += 1
        else:
            first[key] = node
    return removed


class _DedupFWHTPass(CustomGraphPass):
    def __init__(self, then: CustomGraphPass | None = None):
        self.then = then

    def __call__(self, graph: torch.fx.Graph) -> None:
        dedup_fwht(graph)
        if self.then is not None:
            self.then(graph)

    def uuid(self):
        then = None
        if self.then is not None:
            then = self.then.uuid() if hasattr(self.then, "uuid") else None
        return (get_hash_for_files((__file__,)), then)


def install() -> None:
    """Run :func:`dedup_fwht` as Inductor's post-grad pre-pass (before any pass already set there)."""
    current = inductor_config.post_grad_custom_pre_pass
    if isinstance(current, _DedupFWHTPass):
        return
    inductor_config.post_grad_custom_pre_pass = _DedupFWHTPass(current)
