"""The Inductor pass that puts an input's HLWQ projections in one call (hlwq_ops.grouping), on the CPU.

The graphs are compiled by Inductor; the pass's result is read by a pass of the test's own, which Inductor runs
after it (``GroupProjections(then=...)``)."""

import pytest
import torch
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch._inductor.utils import fresh_cache
from torchao.quantization import quantize_

from hlwq_ops import HLWQTensor, codebook, hlwq_q4, hlwq_q5
from hlwq_ops.grouping import GroupProjections

from .test_transformers import MODELS, _opt

GROUP = torch.ops.hlwq.linear_group.default
SIBLINGS = torch.ops.hlwq.linear_siblings.default
LINEAR = torch.ops.hlwq.linear_inference.default
GLU = torch.ops.hlwq.linear_glu.default
NORM_GROUP = torch.ops.hlwq.linear_group_norm.default


class _Record(CustomGraphPass):
    """Each compiled graph's calls: (groups with their sizes, with or without a norm, siblings calls with theirs,
    single calls, ``hlwq.linear_glu`` calls); and in ``norms`` each graph's ``hlwq.linear_group_norm`` calls."""

    def __init__(self):
        self.graphs = []
        self.norms = []

    def __call__(self, graph):
        groups = [len(node.args[1] if node.target is GROUP else node.args[4]) for node in graph.nodes
                  if node.target in (GROUP, NORM_GROUP)]
        siblings = [len(node.args[1]) for node in graph.nodes if node.target is SIBLINGS]
        self.graphs.append((groups, siblings, sum(node.target is LINEAR for node in graph.nodes),
                            sum(node.target is GLU for node in graph.nodes)))
        self.norms.append(sum(node.target is NORM_GROUP for node in graph.nodes))

    def uuid(self):
        return None  # (no caching: every test compiles afresh)


class _Count(CustomGraphPass):
    """How many nodes of ``target`` each compiled graph holds (after the pass)."""

    def __init__(self, target):
        self.target, self.counts = target, []

    def __call__(self, graph):
        self.counts.append(sum(node.target is self.target for node in graph.nodes))

    def uuid(self):
        return None


def _compiled(module, *others):
    """``module`` compiled (``fullgraph``) with the pass, then a :class:`_Record` and ``others``; and the record."""
    record = _Record()
    torch._dynamo.reset()
    options = {"post_grad_custom_post_pass": GroupProjections(then=[record, *others])}
    return torch.compile(module, fullgraph=True, options=options), record


def _eager_and_compiled(module, x):
    """``module(x)`` eager and compiled (``fullgraph``) with the pass, and what the compiled graphs hold."""
    compiled, record = _compiled(module)
    with torch.no_grad():
        return module(x), compiled(x), record.graphs


class _Siblings(torch.nn.Module):
    """Four projections of one input (a fourth for a second group), one of another bit width, and one of another
    input."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (torch.nn.Linear(256, n, bias=False) for n in (128, 32, 48, 16))
        self.other_bits = torch.nn.Linear(256, 8, bias=False)
        self.other_input = torch.nn.Linear(128, 24, bias=False)

    def forward(self, x):
        ys = [self.a(x), self.b(x), self.other_bits(x), self.c(x), self.d(x)]
        return torch.cat([*ys, self.other_input(ys[0])], -1)


def _siblings():
    module = _Siblings().eval()
    quantize_(module, hlwq_q4(), lambda m, fqn: fqn == "other_bits")
    quantize_(module, hlwq_q5(), lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "other_bits")
    return module


def test_calls_on_one_input_group_by_format_in_threes():
    expected, y, graphs = _eager_and_compiled(_siblings(), torch.randn(1, 256))
    # a, b, c of one group, d alone after three; Q4's call and the other input's apart
    assert graphs == [([3], [], 3, 0)]
    assert torch.equal(y, expected)  # (the CPU's group runs each weight's call: the same sums)


@pytest.mark.parametrize("M", [2, 16])
def test_rows_past_one_become_siblings(M):
    """Where a tensor-core kernel may serve the calls (from M = 2 on an H100), the calls of one input and format
    become one ``hlwq.linear_siblings`` call (any number of them), its outputs each call's."""
    expected, y, graphs = _eager_and_compiled(_siblings(), torch.randn(M, 256))
    assert graphs == [([], [4], 2, 0)]
    assert torch.equal(y, expected)


class _Many(torch.nn.Module):
    """Six projections of one input, as an encoder-decoder's layers' cross-attention k and v of the encoder's output."""

    def __init__(self):
        super().__init__()
        self.projections = torch.nn.ModuleList(torch.nn.Linear(256, 16, bias=False) for _ in range(6))

    def forward(self, x):
        return torch.cat([p(x) for p in self.projections], -1)


def test_siblings_come_four_at_most():
    """A ``hlwq.linear_siblings`` call takes four calls at most: the calls move to the first one's place, so a group
    without a bound would compute every layer's projections of an input they all read at the first layer."""
    module = _Many().eval()
    quantize_(module, hlwq_q5())
    expected, y, graphs = _eager_and_compiled(module, torch.randn(4, 256))
    assert graphs == [([], [4, 2], 0, 0)]
    assert torch.equal(y, expected)


@pytest.mark.parametrize("dynamic", [False, True])
def test_rows_known_only_at_run_time_stay_apart(monkeypatch, dynamic):
    """With the GEMV forced (``HLWQ_PATH=gemv``) three rows are grouped, but not a row count the graph takes at run
    time."""
    monkeypatch.setenv("HLWQ_PATH", "gemv")
    x = torch.randn(3, 256)
    if dynamic:
        torch._dynamo.mark_dynamic(x, 0)
    expected, y, graphs = _eager_and_compiled(_siblings(), x)
    assert graphs == ([([], [], 6, 0)] if dynamic else [([3], [], 3, 0)])
    assert torch.equal(y, expected)


def test_weights_with_their_own_codebooks_group_with_them():
    """Each weight's codebook reaches the group's call (a seed checkpoint's centroids). The pass read a codebook
    passed by position as none, and grouped such weights as if they used the standard one: silently wrong."""
    module = _siblings()
    for i, name in enumerate(("a", "b", "c", "d")):
        layer = getattr(module, name)
        own = codebook(5) * (1.05 + 0.1 * i)
        layer.weight = torch.nn.Parameter(HLWQTensor.from_hp(torch.randn_like(layer.weight.dequantize()), 5,
                                                             codebook=own), requires_grad=False)
    expected, y, graphs = _eager_and_compiled(module, torch.randn(1, 256))
    assert graphs == [([3], [], 3, 0)]
    assert torch.equal(y, expected)


class _SliceAfter(torch.nn.Module):
    """A second weight sliced out of a stacked one after the first call: made after it in the graph."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(256, 32, bias=False)
        self.stacked = torch.nn.Linear(256, 64, bias=False)

    def forward(self, x):
        y = self.first(x)
        return torch.cat([y, torch.nn.functional.linear(x, self.stacked.weight[16:48])], -1)


def test_a_weight_made_after_the_first_call_stays_apart():
    module = _SliceAfter().eval()
    quantize_(module, hlwq_q5())
    expected, y, graphs = _eager_and_compiled(module, torch.randn(1, 256))
    assert graphs == [([], [], 2, 0)]
    assert torch.equal(y, expected)


@pytest.mark.parametrize("arch", ["llama", "qwen3.5", "opt"])  # OPT: q, k and v with biases
def test_graph_decoder_groups_and_decodes_like_generate(arch):
    """At batch 1 the decode step's q, k, v and gate, up (Qwen3.5's linear attention: its input projections too)
    are grouped, and the tokens are ``generate()``'s."""
    from hlwq_ops.decode import GraphDecoder

    torch.manual_seed(0)
    model = {**MODELS, "opt": _opt}[arch]().eval()
    model.generation_config.eos_token_id = None
    quantize_(model, hlwq_q5())
    ids = torch.randint(0, 512, (1, 6))
    record = _Record()
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static")
        torch._dynamo.reset()
        with torch._inductor.config.patch(post_grad_custom_post_pass=record):
            tokens = GraphDecoder(model).generate(ids, 5)
    assert torch.equal(tokens, expected)
    (groups, siblings, singles, glus), = record.graphs
    assert not siblings
    assert groups and all(size in (2, 3) for size in groups), groups
    assert glus == (0 if arch == "opt" else 2)  # each layer's down projection on gate and up (OPT: fc1, ReLU, fc2)
    # the norms before each group but the first layer's first (of the embedding, no residual add); OPT's LayerNorm is
    # another form
    assert record.norms == [0 if arch == "opt" else 3]
    if arch in ("llama", "opt"):  # (OPT's MLP: fc1 alone)
        assert groups == ([3, 2] * 2 if arch == "llama" else [3] * 2)


def test_generate_groups_with_the_pass_in_inductors_config():
    """``model.generate()`` with a static cache compiles its decode step itself: with the pass set in Inductor's
    config, that graph groups each layer's q, k, v and gate, up, and the tokens are the eager ``generate()``'s."""
    from transformers import CompileConfig

    from .test_transformers import _llama_q5

    model, record = _llama_q5(), _Record()
    model.generation_config.eos_token_id = None
    ids = torch.randint(0, 512, (1, 6))
    on_cpu = CompileConfig()
    on_cpu._compile_all_devices = True  # (transformers compiles on a GPU only, unless told)
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static")
        torch._dynamo.reset()
        with torch._inductor.config.patch(post_grad_custom_post_pass=GroupProjections(then=record)):
            tokens = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static",
                                    compile_config=on_cpu)
    torch._dynamo.reset()  # (the graph compiled with the test's pass goes)
    assert torch.equal(tokens, expected)
    assert record.graphs == [([3, 2] * 2, [], 3, 2)]  # two layers: o alone, down on gate and up; lm_head
    assert record.norms == [3]


def test_graph_decoder_without_grouping_keeps_each_call():
    from hlwq_ops.decode import GraphDecoder

    from .test_transformers import _llama_q5

    model, record = _llama_q5(), _Record()
    ids = torch.randint(0, 512, (1, 6))
    torch._dynamo.reset()
    with torch.no_grad(), torch._inductor.config.patch(post_grad_custom_post_pass=record):
        GraphDecoder(model, group_projections=False).generate(ids, 3)
    assert record.graphs == [([], [], 15, 0)]  # seven projections a layer and lm_head


class _GatedMLP(torch.nn.Module):
    """Llama's MLP, ``down(silu(gate(x)) * up(x))``, or a variant of it (``form``)."""

    def __init__(self, form="llama"):
        super().__init__()
        self.form = form
        self.gate, self.up = (torch.nn.Linear(256, 512, bias=False) for _ in range(2))
        self.down = torch.nn.Linear(512, 256, bias=False)

    def forward(self, x):
        if self.form == "up called first":
            up = self.up(x)
            gate = self.gate(x)
        else:
            gate, up = self.gate(x), self.up(x)
        act = torch.nn.functional.gelu if self.form == "gelu" else torch.nn.functional.silu
        product = up * act(gate) if self.form == "up times silu" else act(gate) * up
        y = self.down(product)
        return (y, product) if self.form == "product returned too" else y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
# (up's half first in the group: "up times silu"; calling up first does not, Inductor orders the calls by their uses)
@pytest.mark.parametrize("form", ["llama", "up times silu", "up called first"])
def test_the_down_projection_takes_silu_of_gate_times_up(dtype, form):
    """A gated MLP's down projection on ``silu(gate) * up`` of a group's halves is one ``hlwq.linear_glu`` call on
    the group's output (its product in the GEMV's prologue on a GPU), the product's nodes gone."""
    module = _GatedMLP(form).to(dtype).eval()
    quantize_(module, hlwq_q5())
    products = _Count(torch.ops.aten.mul.Tensor)
    compiled, record = _compiled(module, products)
    x = torch.randn(1, 256, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(compiled(x), module(x))
    assert record.graphs == [([2], [], 0, 1)] and products.counts == [0]


class _NormedProjections(torch.nn.Module):
    """A residual add, Llama's RMSNorm and three projections of the norm, or a variant (``form``): Qwen3.5's norm
    (``1 + weight``), the sum read after them (the layer's next residual add), or forms the pass leaves alone."""

    def __init__(self, form="llama"):
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
        from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5RMSNorm

        super().__init__()
        self.form = form
        if form == "qwen3.5":
            self.norm = Qwen3_5RMSNorm(256, eps=1e-6)
            torch.nn.init.uniform_(self.norm.weight, -0.5, 0.5)
        else:
            self.norm = LlamaRMSNorm(256, eps=1e-5)
            torch.nn.init.uniform_(self.norm.weight, 0.5, 1.5)
        self.q, self.k, self.v = (torch.nn.Linear(256, n, bias=False) for n in (128, 64, 64))

    def forward(self, x):
        residual = x.roll(1, -1)  # (exact, compiled or not)
        if self.form == "no residual add":
            h = residual
        elif self.form == "add with alpha":
            h = torch.add(x, residual, alpha=2)
        elif self.form == "broadcast add":
            h = x + residual[..., :1]
        else:
            h = x + residual
        normed = self.norm(h)
        y = torch.cat([self.q(normed), self.k(normed), self.v(normed)], -1)
        if self.form == "norm returned too":
            return y, normed
        if self.form == "sum read later":
            return y, h * 2
        return y


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("form", ["llama", "qwen3.5", "sum read later"])
def test_the_residual_add_and_norm_before_a_group_move_into_it(dtype, form):
    """A group on Llama's or Qwen3.5's RMSNorm of a residual add is one ``hlwq.linear_group_norm`` call on the add's
    two inputs (the add and the norm in the GEMV's prologue on a GPU), of the norm's form, the norm's nodes gone, and
    where the sum is read later, it reads the call's second output."""
    module = _NormedProjections(form).to(dtype).eval()
    quantize_(module, hlwq_q5())
    means = _Count(torch.ops.aten.mean.dim)  # (the norm's reduction)
    compiled, record = _compiled(module, means)
    x = torch.randn(1, 256, dtype=dtype)
    with torch.no_grad():
        y, expected = compiled(x), module(x)
    assert all(torch.equal(a, b) for a, b in zip(y, expected)) if form == "sum read later" else torch.equal(y, expected)
    assert record.graphs == [([3], [], 0, 0)] and record.norms == [1] and means.counts == [0]


@pytest.mark.parametrize("form", ["no residual add", "norm returned too", "add with alpha", "broadcast add",
                                  "norm weight in float32"])
def test_other_norms_stay_before_the_group(form):
    module = _NormedProjections(form).to(torch.bfloat16).eval()
    if form == "norm weight in float32":  # (the norm's output in float32: another dtype than the sum's)
        module.norm.float()
    quantize_(module, hlwq_q5())
    compiled, record = _compiled(module)
    x = torch.randn(1, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        y, expected = compiled(x), module(x)
    assert record.graphs == [([3], [], 0, 0)] and record.norms == [0]
    # (Inductor's norm sums in its own order, and rounds once where eager rounds twice)
    torch.testing.assert_close(y, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("form", ["gelu", "product returned too"])
def test_other_products_stay_before_the_down_projection(form):
    module = _GatedMLP(form).eval()
    quantize_(module, hlwq_q5())
    expected, y, graphs = _eager_and_compiled(module, torch.randn(1, 256))
    assert graphs == [([2], [], 1, 0)]
    if form == "gelu":  # (Inductor's GELU is not eager's to the last bit)
        torch.testing.assert_close(y, expected)
    else:
        assert all(torch.equal(a, b) for a, b in zip(y, expected))


def _down_on_halves(rows: tuple, form: str):
    """A traced graph as the pass sees it (Inductor's decompositions, ``fwd_only``): a group of weights of ``rows``
    (400 together) on one input, then a down projection (K = 200, a bias) on ``silu(gate) * up`` of two slices of
    its output: its column halves with gate's first or up's first, or every other column; with up's first, the gate
    slice or the group's output also returned. And its arguments."""
    from torch._inductor.pattern_matcher import fwd_only
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    *members, (q_down, s_down) = [torch.ops.hlwq.quantize(torch.randn(n, k), 5, 128)
                                  for n, k in [(n, 256) for n in rows] + [(64, 200)]]

    def down(x, q_down, s_down, b_down, *members):  # (members: codes, scales, ...: flat, for the fake propagation)
        qdata, scale = list(members[::2]), list(members[1::2])
        group = torch.ops.hlwq.linear_group(x, qdata, scale, [None] * len(rows), 5, 128, 256, [None] * len(rows))
        if form == "every other column":
            gate, up = group[..., ::2], group[..., 1::2]
        elif form == "gate first":
            gate, up = group[..., :200], group[..., 200:]
        else:
            up, gate = group[..., :200], group[..., 200:]
        y = torch.ops.hlwq.linear_inference(torch.nn.functional.silu(gate) * up, q_down, s_down, b_down, 5, 128, 200)
        return (y, *{"up first, gate returned": (gate,), "up first, group returned": (group,)}.get(form, ()))

    args = (torch.randn(1, 256), q_down, s_down, torch.randn(64), *(t for member in members for t in member))
    graph_module = fwd_only(down, args)
    FakeTensorProp(graph_module, FakeTensorMode()).propagate(*args)  # (every value of one fake mode, as Inductor's)
    return graph_module, args


@pytest.mark.parametrize("rows,form,fused", [
    ((200, 200), "gate first", True),
    ((200, 200), "up first", True),  # the group's weights swapped first
    ((150, 250), "gate first", True),  # (columns, not weights: the halves cut a weight)
    ((150, 250), "up first", False),  # ... then swapping the weights would not swap the halves
    ((100, 100, 200), "gate first", True),
    ((100, 100, 200), "up first", False),  # three weights: not swapped
    ((200, 200), "every other column", False),
    ((200, 200), "up first, gate returned", True),  # swapped: the slice returned holds the same values
    ((200, 200), "up first, group returned", False),  # the group's columns would move
])
def test_a_groups_halves_in_either_order(rows, form, fused):
    from hlwq_ops.grouping import fuse_gated_down

    graph_module, args = _down_on_halves(rows, form)
    expected = graph_module(*args)
    assert fuse_gated_down(graph_module.graph) == fused
    graph_module.recompile()
    assert sum(node.target is GLU for node in graph_module.graph.nodes) == fused
    assert all(torch.equal(a, b) for a, b in zip(graph_module(*args), expected, strict=True))


class _Outputs(torch.nn.Module):
    """Two projections of one input returned as they are, and two used inside the graph."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = (torch.nn.Linear(256, n, bias=False) for n in (32, 16, 8, 8))

    def forward(self, x):
        return self.a(x), self.b(x), self.c(x) * self.d(x)


class _ViewOutputs(_Outputs):
    """As :class:`_Outputs`, the two returned through views."""

    def forward(self, x):
        return *self.a(x).split(16, -1), self.b(x).t(), self.c(x).unsqueeze(0) * self.d(x)


@pytest.mark.parametrize("module", [_Outputs, _ViewOutputs])
def test_a_call_whose_output_leaves_the_graph_stays_apart(monkeypatch, module):
    """A slice of the group's output would come back with the group's row stride, not the call's; so would a view
    of it (three rows, the GEMV forced: a view's strides and contiguity differed from eager's)."""
    monkeypatch.setenv("HLWQ_PATH", "gemv")
    module = module().eval()
    quantize_(module, hlwq_q5())
    expected, y, graphs = _eager_and_compiled(module, torch.randn(3, 256))
    assert graphs == [([2], [], 2, 0)]
    assert all(torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(y, expected))


@pytest.mark.parametrize("module", [_Outputs, _ViewOutputs])
def test_siblings_whose_outputs_leave_the_graph_keep_their_strides(module):
    """A ``hlwq.linear_siblings`` call's outputs are tensors of their own: calls whose outputs the graph returns,
    as they are or through views, join it, and come back with eager's strides."""
    module = module().eval()
    quantize_(module, hlwq_q5())
    expected, y, graphs = _eager_and_compiled(module, torch.randn(3, 256))
    assert graphs == [([], [4], 0, 0)]
    assert all(torch.equal(a, b) and a.stride() == b.stride() for a, b in zip(y, expected))


class _Biases(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (torch.nn.Linear(256, 16) for _ in range(3))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x)], -1)


def test_biases_of_another_dtype_stay_apart():
    module = _Biases().eval()
    quantize_(module, hlwq_q5())
    module.b.bias.data = module.b.bias.data.double().float()  # (the same values)
    module.c.bias.data = module.c.bias.data.bfloat16()
    expected, y, graphs = _eager_and_compiled(module, torch.randn(1, 256))
    assert graphs == [([2], [], 1, 0)]
    assert torch.equal(y, expected)


def test_the_callers_passes_run_after_and_key_the_caches():
    assert GroupProjections().uuid() is not None
    assert GroupProjections(then=lambda graph: None).uuid() is None
    first, second = _Record(), _Record()
    first.uuid, second.uuid = (lambda: "first"), (lambda: "second")
    assert GroupProjections(then=first).uuid().endswith(b"'first'")
    both = GroupProjections(then=[first, second])
    assert both.uuid().endswith(b"'first''second'")
    module = _siblings()
    torch._dynamo.reset()
    with torch.no_grad(), fresh_cache():  # (keyed, a graph would come from an earlier run's cache, passes not run)
        torch.compile(module, fullgraph=True, options={"post_grad_custom_post_pass": both})(torch.randn(1, 256))
    assert first.graphs == second.graphs == [([3], [], 3, 0)]
