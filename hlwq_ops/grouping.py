"""Sibling projections in one GEMV, or behind one FWHT: an Inductor graph pass for compiled graphs.

A transformer layer multiplies one input by several weights in turn -- the attention's q, k and v, the MLP's gate
and up -- and transformers calls each projection's module on its own. At batch 1 each call is a GEMV that pays a
launch, a prologue (rotating the activations) and a tail whatever its rows, so the small ones are latency-bound:
Llama-3-8B's k and v (1024 x 4096, 2.7 MB each) took 4.2 us where its q (4096 x 4096, four times the bytes) took 8.2
(H100, ``benchmarks/RESULTS.md`` 54b-c). One GEMV over all their rows took 11.9 us against 16.9 for the three calls,
and 39.2 against 42.3 for gate and up (54c).

:class:`GroupProjections` finds in a compiled graph the ``hlwq.linear_inference`` calls that read the same input
with weights of one format, and makes each two or three of them one ``hlwq.linear_group`` call, whose output the
graph slices into the calls' columns. Where ``hlwq.linear_group`` runs the GEMV (decode sizes:
:func:`hlwq_ops.kernels.group_serves`), that is one launch over all their rows; elsewhere it runs each weight's own
call and concatenates. The pass makes such groups only of calls of a row count known while compiling at which every
device runs the GEMV.

At other row counts known while compiling (a batch of several sequences, a prefill), where each call runs a kernel of
its own, the calls on one input become one ``hlwq.linear_siblings`` call (up to :data:`MAX_SIBLINGS`), one output
each: each tensor-core kernel there reads the activations rotated by an FWHT launch before it, and siblings whose
kernels read them alike share one (at batch 8 on the Qwen3.5-9B shape, before the GEMV competed at M = 3..8 on small
layers, the FWHT took 8.3% of the decode step, 96 of its 248 launches repeating a sibling's rotation:
``benchmarks/RESULTS.md`` 61c). A graph with a dynamic batch keeps its calls as they were.

A gated MLP (Llama's, Qwen's) then multiplies ``silu(gate) * up`` of such a group's two outputs in a small kernel of
Inductor's, one a layer between two GEMVs, before its down projection. :func:`fuse_gated_down` makes each down
projection's call on that product of a ``hlwq.linear_group`` call's two column halves one
``hlwq.linear_glu`` call on the group's output: at decode sizes its GEMV computes the product in its prologue, rounded
as eager PyTorch rounds ``F.silu(gate) * up`` (the SiLU, then the product, each to the activations' dtype; Inductor's
own fused kernel for them rounds the product only, so the fused call's activations are eager's, not the unfused
graph's, where the two differ).

Before each group a decoder layer adds its residual and normalizes, ``norm(x + residual)``, in one more kernel of
Inductor's (two a layer: before the attention's q-k-v group and before the MLP's gate-up group).
:func:`fuse_norm_into_group` makes a group's call on transformers' RMSNorm of a residual add -- Llama's form (which
Qwen3's and Mistral's copy) or Qwen3.5's, ``1 + weight`` in float32 (Qwen3-Next's and Gemma 1-3's too) -- one
``hlwq.linear_group_norm`` call on the add's two inputs: at decode sizes its GEMV adds, normalizes (each product rounded
as eager PyTorch rounds it; the mean of squares summed in its own order, on a GPU its division and square root to
within a few ulps) and stores the sum, which the layer's next residual add reads, in its prologue. A norm of another
form (LayerNorm) and a norm without a residual add (the first layer's, of the embedding) stay.

Inductor runs the passes on each graph it compiles (its ``post_grad_custom_post_pass``)::

    model = torch.compile(model, options={"post_grad_custom_post_pass": GroupProjections()})

:class:`hlwq_ops.decode.GraphDecoder` compiles its decode step with it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch._inductor.pattern_matcher import fwd_only, fx_to_pattern
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.fx import Graph, Node
from torch.utils import _pytree as pytree

from . import kernels
from . import ops as _ops  # noqa: F401  (defines the hlwq ops this pass reads and writes)
from .kernels.gemv import MAX_GROUP

__all__ = ["PASSES", "GroupProjections", "fuse_gated_down", "fuse_norm_into_group", "group_projections"]

LINEAR = torch.ops.hlwq.linear_inference.default
GROUP = torch.ops.hlwq.linear_group.default
GLU = torch.ops.hlwq.linear_glu.default
NORM_GROUP = torch.ops.hlwq.linear_group_norm.default

# The most calls one ``hlwq.linear_siblings`` takes: a layer's projections of one input (Qwen3.5's linear attention
# has four). The calls move to the first one's place, so a group without a bound would compute every decoder layer's
# projections of an input they all read (an encoder's output, for cross-attention) at the first layer, holding all
# their outputs from there on.
MAX_SIBLINGS = 4


class _Call(NamedTuple):
    """A ``hlwq.linear_inference`` call's arguments, by name."""

    x: Node
    qdata: Node
    scale: Node
    bias: Node | None
    bits: int
    block_size: int
    K: int
    codebook: Node | None


def _call(node: Node) -> tuple[_Call, bool] | None:
    """The arguments of a ``hlwq.linear_inference`` call this pass can group, and whether it joins a
    ``hlwq.linear_group`` (at a row count where :func:`hlwq_ops.kernels.group_serves` holds) or a
    ``hlwq.linear_siblings`` (more rows); or None: a size not an int (the rows of its input too), one row where
    ``group_serves`` does not hold (``HLWQ_PATH`` forcing another family), or a ``linear_group`` call whose output is
    the graph's (a slice of the group's output would come back with the group's row stride; a view of it too)."""
    if node.target is not LINEAR:
        return None
    call = _arguments(node)
    x, out = call.x.meta.get("val"), node.meta.get("val")
    if x is None or out is None or not all(isinstance(v, int) for v in (call.bits, call.block_size, call.K)):
        return None
    sizes = (*x.shape, out.shape[-1])
    if not all(isinstance(d, int) for d in sizes):
        return None
    M = math.prod(x.shape[:-1])
    if not kernels.group_serves(M):
        return (call, False) if M > 1 else None
    return None if _leaves_the_graph(node) else (call, True)


def _arguments(node: Node) -> _Call:
    """A ``hlwq.linear_inference`` call's arguments, the codebook's default first: a traced call passes it by
    position, by keyword or not at all."""
    return _Call(**({"codebook": None} | dict(zip(_Call._fields, node.args)) | dict(node.kwargs)))


def _leaves_the_graph(node: Node) -> bool:
    """Whether ``node``'s output is among the graph's outputs, itself or through views of it (``unsqueeze``, a
    slice, ``t``, the pieces of a ``split``...): either would hand back a view of the group's output, with its
    strides."""
    seen, todo = set(), [node]
    while todo:
        for user in todo.pop().users:
            if user.op == "output":
                return True
            if user not in seen and _is_view(user):
                seen.add(user)
                todo.append(user)
    return False


def _is_view(node: Node) -> bool:
    """A view op's call, or one output taken from a multi-output view's (``operator.getitem`` of a ``split``)."""
    if node.target is operator.getitem:
        node = node.args[0]
    return isinstance(node.target, torch._ops.OpOverload) and node.target.is_view


def _inputs_before(call: _Call, node: Node, order: dict[Node, int]) -> bool:
    """Whether every tensor ``call`` reads is made before ``node`` (where the group's call will stand)."""
    tensors = (call.x, call.qdata, call.scale, call.bias, call.codebook)
    return all(order[t] < order[node] for t in tensors if isinstance(t, Node))


def _fake(target, args: tuple):
    """``target(*args)`` on the arguments' fake values (a node's ``meta["val"]``), in their fake mode."""
    values = pytree.tree_map_only(Node, lambda n: n.meta["val"], args)
    mode = torch._guards.detect_fake_mode([v for v in pytree.tree_leaves(values) if isinstance(v, torch.Tensor)])
    with mode or contextlib.nullcontext():
        return target(*values)


def _weights(calls: list[_Call]) -> tuple:
    """The arguments of one call for all of ``calls`` (on one input): ``hlwq.linear_group``'s and
    ``hlwq.linear_siblings``'."""
    first = calls[0]
    return (first.x, [c.qdata for c in calls], [c.scale for c in calls], [c.bias for c in calls], first.bits,
            first.block_size, first.K, [c.codebook for c in calls])


def _siblings(graph: Graph, nodes: list[Node], calls: list[_Call]) -> None:
    """Replace ``nodes`` (calls on one input, their arguments ``calls``) by one ``hlwq.linear_siblings`` call, before
    the first, and its outputs in their places."""
    args = _weights(calls)
    with graph.inserting_before(nodes[0]):
        siblings = graph.call_function(torch.ops.hlwq.linear_siblings.default, args)
        siblings.meta["val"] = _fake(torch.ops.hlwq.linear_siblings.default, args)
        for i, node in enumerate(nodes):
            out = graph.call_function(operator.getitem, (siblings, i))
            out.meta["val"] = siblings.meta["val"][i]
            node.replace_all_uses_with(out)
    for node in nodes:
        graph.erase_node(node)


def _merge(graph: Graph, nodes: list[Node], calls: list[_Call]) -> None:
    """Replace ``nodes`` (calls on one input, their arguments ``calls``) by one ``hlwq.linear_group`` call, before
    the first, and a slice of its columns for each."""
    args = _weights(calls)
    dim = calls[0].x.meta["val"].dim() - 1
    with graph.inserting_before(nodes[0]):
        group = graph.call_function(GROUP, args)
        group.meta["val"] = _fake(GROUP, args)
        start = 0
        for node in nodes:
            end = start + node.meta["val"].shape[-1]
            piece = graph.call_function(torch.ops.aten.slice.Tensor, (group, dim, start, end))
            piece.meta["val"] = _fake(torch.ops.aten.slice.Tensor, (group, dim, start, end))
            node.replace_all_uses_with(piece)
            start = end
    for node in nodes:
        graph.erase_node(node)


def group_projections(graph: Graph) -> int:
    """Group ``graph``'s ``hlwq.linear_inference`` calls on one input, in place (see the module docstring): calls
    of one input, bit width, block size and K, in the graph's order, each joining its group only if the tensors it
    reads are made before the group's first call, up to :data:`MAX_SIBLINGS` a group; into a ``hlwq.linear_group``
    (one row) only calls with a bias and a codebook each or none, up to :data:`MAX_GROUP` a group. Returns how many
    calls are gone (0: the graph is unchanged)."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    groups: list[tuple[bool, list[tuple[Node, _Call]]]] = []
    growing: dict[tuple, list[tuple[Node, _Call]]] = {}
    for node in graph.nodes:
        found = _call(node)
        if found is None:
            continue
        call, one_gemv = found
        key = (call.x, call.bits, call.block_size, call.K, one_gemv)
        if one_gemv:  # (one GEMV launch: a bias each or none, of one dtype; a codebook each or none)
            key += (None if call.bias is None else call.bias.meta["val"].dtype, call.codebook is None)
        group = growing.get(key)
        full = len(group or ()) == (MAX_GROUP if one_gemv else MAX_SIBLINGS)
        if group is None or full or not _inputs_before(call, group[0][0], order):
            group = growing[key] = []
            groups.append((one_gemv, group))
        group.append((node, call))
    gone = 0
    for one_gemv, group in groups:
        if len(group) > 1:
            nodes, calls = zip(*group)
            (_merge if one_gemv else _siblings)(graph, list(nodes), list(calls))
            gone += len(group) - 1
    return gone


@functools.cache
def _products(dtype: torch.dtype) -> tuple:
    """``silu(gate) * up`` and ``up * silu(gate)`` on ``dtype`` activations as this torch's decompositions write them
    in a graph Inductor compiles: patterns of Inductor's pattern matcher, traced once per dtype."""
    halves = (torch.empty(2, 8, dtype=dtype), torch.empty(2, 8, dtype=dtype))
    with unset_fake_temporarily():  # (traced on real tensors, also while Inductor compiles under its fake mode)
        return tuple(fx_to_pattern(fwd_only(product, halves), argnames=("gate", "up"))
                     for product in (lambda gate, up: F.silu(gate) * up, lambda gate, up: up * F.silu(gate)))


def _gate_then_up(gate: Node, up: Node, K: int) -> Node | None:
    """The ``hlwq.linear_group`` call whose output's column halves, ``K`` each, are ``gate`` and ``up`` (slices of
    it), gate's first; or None. A group of two read only through those halves, up's first (Inductor orders a graph's
    calls by their uses, not their calls), has its weights and the halves' slices swapped first, which changes no
    value the graph computes."""
    slices = []
    for half in (gate, up):
        if not isinstance(half, Node) or half.target is not torch.ops.aten.slice.Tensor:
            return None
        slices.append(dict(zip(("source", "dim", "start", "end", "step"), half.args)) | dict(half.kwargs))
    group = slices[0]["source"]
    width = group.meta["val"].shape[-1] if isinstance(group, Node) and "val" in group.meta else None
    if width != 2 * K or group.target is not GROUP or slices[1]["source"] is not group:
        return None
    last = group.meta["val"].dim() - 1
    bounds = [(s.get("dim", 0) % (last + 1), s.get("start") or 0,
               min(width if s.get("end") is None else s["end"], width), s.get("step", 1)) for s in slices]
    halves = [(last, 0, K, 1), (last, K, 2 * K, 1)]
    if bounds == halves:
        return group
    x, qdata, scale, bias, bits, block_size, k_in, codebook = group.args  # (as _merge makes it)
    if (bounds != halves[::-1] or len(qdata) != 2 or set(group.users) != {gate, up}
            or any(q.meta["val"].shape[0] != K for q in qdata)):  # (each weight one half: swapping swaps the halves)
        return None
    group.args = (x, qdata[::-1], scale[::-1], bias[::-1], bits, block_size, k_in, codebook[::-1])
    gate.args, gate.kwargs = (group, last, 0, K), {}
    up.args, up.kwargs = (group, last, K, 2 * K), {}
    return group


def fuse_gated_down(graph: Graph) -> int:
    """Make each ``hlwq.linear_inference`` call on ``silu(gate) * up`` (alone, for it only), where gate and up are
    the column halves of one ``hlwq.linear_group`` call, one ``hlwq.linear_glu`` call on the group's output, in
    place (see the module docstring); the product's nodes go. Returns how many calls changed."""
    fused = 0
    for node in list(graph.nodes):
        if node.target is not LINEAR:
            continue
        call = _arguments(node)
        x = call.x
        if (x.target is not torch.ops.aten.mul.Tensor or len(x.users) != 1 or "val" not in x.meta
                or not all(isinstance(v, int) for v in (call.bits, call.block_size, call.K))):
            continue
        match = next((m for pattern in _products(x.meta["val"].dtype) if (m := pattern.match(x))), None)
        group = match and _gate_then_up(match.kwargs["gate"], match.kwargs["up"], call.K)
        if not group:
            continue
        args = (group, call.qdata, call.scale, call.bias, call.bits, call.block_size, call.K, call.codebook)
        with graph.inserting_before(node):
            glu = graph.call_function(GLU, args)
            glu.meta["val"] = _fake(GLU, args)
        node.replace_all_uses_with(glu)
        graph.erase_node(node)
        order = {n: i for i, n in enumerate(graph.nodes)}
        for dead in sorted([*match.nodes, match.kwargs["gate"], match.kwargs["up"]], key=order.get, reverse=True):
            if not dead.users:
                graph.erase_node(dead)
        fused += 1
    return fused


# The epsilon traced into the norm's pattern, which matches any there (Inductor's pattern matcher takes the scalars
# of a traced pattern as they are, but for those named in its ``scalar_workaround``).
_EPS = 0.0123


@functools.cache
def _norm(dtype: torch.dtype, unit_offset: bool):
    """Transformers' RMSNorm on ``dtype`` activations, Llama's form or with ``unit_offset`` Qwen3.5's
    (:func:`hlwq_ops.kernels.rms_norm`), as this torch's decompositions write it in a graph Inductor compiles: a
    pattern of Inductor's pattern matcher, traced once per dtype and form, its input ``h``, its weight ``weight`` and
    its epsilon ``eps``."""
    h, weight = torch.empty(2, 8, dtype=dtype), torch.empty(8, dtype=dtype)
    with unset_fake_temporarily():  # (traced on real tensors, also while Inductor compiles under its fake mode)
        return fx_to_pattern(fwd_only(lambda h, weight: kernels.rms_norm(h, weight, _EPS, unit_offset), (h, weight)),
                             argnames=("h", "weight"), scalar_workaround={"eps": _EPS})


def _norm_match(x: Node):
    """The match of a norm of either form whose output is ``x``, and whether it is Qwen3.5's: (match, unit_offset),
    or (None, False)."""
    for unit_offset in (False, True):
        match = _norm(x.meta["val"].dtype, unit_offset).match(x)
        if match:
            return match, unit_offset
    return None, False


def _residual_add(h: Node, x: Node, weight: Node) -> bool:
    """Whether ``h`` adds two tensors of its own shape and dtype (a residual add), and ``weight`` is a (K,) tensor of
    that dtype, ``x`` the norm's output."""
    if not isinstance(h, Node) or h.target is not torch.ops.aten.add.Tensor or len(h.args) != 2 or h.kwargs:
        return False
    out = x.meta["val"]
    values = [n.meta.get("val") if isinstance(n, Node) else None for n in (*h.args, h, weight)]
    if any(not isinstance(v, torch.Tensor) or v.dtype != out.dtype for v in values):
        return False
    return all(v.shape == out.shape for v in values[:3]) and values[3].shape == out.shape[-1:]


def fuse_norm_into_group(graph: Graph) -> int:
    """Make each ``hlwq.linear_group`` call on ``rms_norm(a + b)`` (transformers' RMSNorm of a residual add, Llama's
    form or Qwen3.5's, read only by the call) one ``hlwq.linear_group_norm`` call on ``a`` and ``b``, in place (see
    the module docstring): its first output is the group's, its second the sum, which the sum's other readers (the
    layer's next residual add) read instead. The norm's nodes and the add go. Returns how many calls changed."""
    fused = 0
    for node in list(graph.nodes):
        if node.target is not GROUP:
            continue
        x = node.args[0]
        if not isinstance(x, Node) or len(x.users) != 1 or "val" not in x.meta:
            continue
        match, unit_offset = _norm_match(x)
        if not match:
            continue
        h, weight, eps = match.kwargs["h"], match.kwargs["weight"], match.kwargs["eps"]
        order = {n: i for i, n in enumerate(graph.nodes)}
        inside = set(match.nodes)
        if (not _residual_add(h, x, weight) or not isinstance(eps, (int, float)) or not eps >= 0
                or any(user not in inside for n in match.nodes if n is not x for user in n.users)
                or any(user not in inside and order[user] < order[node] for user in h.users)):
            continue  # (not the form, a step of the norm read elsewhere, or the sum read before the call)
        args = (*h.args, weight, float(eps), *node.args[1:], unit_offset)
        with graph.inserting_before(node):
            both = graph.call_function(NORM_GROUP, args)
            both.meta["val"] = _fake(NORM_GROUP, args)
            outs = []
            for i in range(2):
                outs.append(graph.call_function(operator.getitem, (both, i)))
                outs[-1].meta["val"] = both.meta["val"][i]
        node.replace_all_uses_with(outs[0])
        graph.erase_node(node)
        h.replace_all_uses_with(outs[1], delete_user_cb=lambda user: user not in inside)
        for dead in sorted(inside, key=order.get, reverse=True):
            graph.erase_node(dead)
        if not h.users:
            graph.erase_node(h)
        fused += 1
    return fused


# The passes of GroupProjections, by name, in the order it runs them.
PASSES = {"group": group_projections, "glu": fuse_gated_down, "norm": fuse_norm_into_group}


class GroupProjections(CustomGraphPass):
    """:func:`group_projections`, then :func:`fuse_gated_down` and :func:`fuse_norm_into_group`, as Inductor's
    ``post_grad_custom_post_pass``, then ``then``: the caller's own passes (one, or a list as torch 2.13 also takes
    there), which setting this one in its place would otherwise drop."""

    def __init__(self, then: Callable[[Graph], None] | Sequence[Callable[[Graph], None]] | None = None):
        self.then = tuple(then) if isinstance(then, (list, tuple)) else () if then is None else (then,)

    def __call__(self, graph: Graph) -> None:
        for run in PASSES.values():
            run(graph)
        for other in self.then:
            other(graph)

    def uuid(self) -> bytes | None:
        """What Inductor's caches key a graph compiled with this pass on: the source of the pass and of the ops it
        writes, and each of ``then``'s own keys (None, no caching, where one has none). (Where the pass groups also
        depends on :func:`hlwq_ops.kernels.group_serves`, read while compiling; a graph cached with other groups
        computes the same, only its launches differ.)"""
        keys = [get_hash_for_files((__file__, _ops.__file__))]
        for other in self.then:
            keys.append(other.uuid() if isinstance(other, CustomGraphPass) else None)
        return None if None in keys else b"".join(repr(key).encode() for key in keys)
