"""The Inductor pass that puts an input's HLWQ projections in one call (hlwq_ops.grouping), on the CPU.

The graphs are compiled by Inductor; the pass's result is read by a pass of the test's own, which Inductor runs
after it (``GroupProjections(then=...)``)."""

import pytest
import torch
from torch._inductor.custom_graph_pass import CustomGraphPass
from torchao.quantization import quantize_

from hlwq_ops import hlwq_q4, hlwq_q5
from hlwq_ops.grouping import GroupProjections

from .test_transformers import MODELS, _opt

GROUP = torch.ops.hlwq.linear_group.default
LINEAR = torch.ops.hlwq.linear_inference.default


class _Record(CustomGraphPass):
    """Each compiled graph's calls: (groups with their sizes, single calls)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, graph):
        groups = [len(node.args[1]) for node in graph.nodes if node.target is GROUP]
        self.graphs.append((groups, sum(node.target is LINEAR for node in graph.nodes)))

    def uuid(self):
        return None  # (no caching: every test compiles afresh)


def _compiled(module, record, **kwargs):
    torch._dynamo.reset()
    return torch.compile(module, options={"post_grad_custom_post_pass": GroupProjections(then=record)}, **kwargs)


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
    module, record = _siblings(), _Record()
    x = torch.randn(1, 256)
    with torch.no_grad():
        expected = module(x)
        y = _compiled(module, record, fullgraph=True)(x)
    # a, b, c of one group, d alone after three; Q4's call and the other input's apart
    assert record.graphs == [([3], 3)]
    assert torch.equal(y, expected)  # (the CPU's group runs each weight's call: the same sums)


def test_rows_past_one_stay_apart():
    """Where a tensor-core kernel may serve the calls (M = 2 on an H100), they stay as they were."""
    module, record = _siblings(), _Record()
    x = torch.randn(2, 256)
    with torch.no_grad():
        expected = module(x)
        y = _compiled(module, record, fullgraph=True)(x)
    assert record.graphs == [([], 6)]
    assert torch.equal(y, expected)


@pytest.mark.parametrize("dynamic", [False, True])
def test_rows_known_only_at_run_time_stay_apart(monkeypatch, dynamic):
    """With the GEMV forced (``HLWQ_PATH=gemv``) three rows are grouped, but not a row count the graph takes at run
    time."""
    monkeypatch.setenv("HLWQ_PATH", "gemv")
    module, record = _siblings(), _Record()
    x = torch.randn(3, 256)
    if dynamic:
        torch._dynamo.mark_dynamic(x, 0)
    with torch.no_grad():
        expected = module(x)
        y = _compiled(module, record, fullgraph=True)(x)
    assert record.graphs == ([([], 6)] if dynamic else [([3], 3)])
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
    module, record = _SliceAfter().eval(), _Record()
    quantize_(module, hlwq_q5())
    x = torch.randn(1, 256)
    with torch.no_grad():
        expected = module(x)
        y = _compiled(module, record, fullgraph=True)(x)
    assert record.graphs == [([], 2)]
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
    (groups, singles), = record.graphs
    assert groups and all(size in (2, 3) for size in groups), groups
    if arch in ("llama", "opt"):  # (OPT's MLP: fc1 alone)
        assert groups == ([3, 2] * 2 if arch == "llama" else [3] * 2)


def test_graph_decoder_without_grouping_keeps_each_call():
    from hlwq_ops.decode import GraphDecoder

    from .test_transformers import _llama_q5

    model, record = _llama_q5(), _Record()
    ids = torch.randint(0, 512, (1, 6))
    torch._dynamo.reset()
    with torch.no_grad(), torch._inductor.config.patch(post_grad_custom_post_pass=record):
        GraphDecoder(model, group_projections=False).generate(ids, 3)
    assert record.graphs == [([], 15)]  # seven projections a layer and lm_head


def test_the_pass_keys_inductors_caches_only_with_a_key_for_the_callers_pass():
    assert GroupProjections().uuid() is not None
    assert GroupProjections(then=lambda graph: None).uuid() is None
    record = _Record()
    record.uuid = lambda: "mine"
    assert GroupProjections(then=record).uuid().endswith(b"'mine'")
