"""torch.compile over HLWQ models: no graph breaks, eager parity, recompiles, one op per projection."""

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor import config as inductor_config
from torchao.quantization import quantize_

from hlwq_ops import hlwq_q5

from ._utils import DEVICES, rel_error


class Block(torch.nn.Module):
    """Attention-like and MLP-like projections that share their inputs."""

    def __init__(self, d=256, h=384):
        super().__init__()
        self.q = torch.nn.Linear(d, d, bias=False)
        self.k = torch.nn.Linear(d, 128, bias=False)
        self.v = torch.nn.Linear(d, 128, bias=False)
        self.o = torch.nn.Linear(d + 256, d)
        self.gate = torch.nn.Linear(d, h, bias=False)
        self.up = torch.nn.Linear(d, h, bias=False)
        self.down = torch.nn.Linear(h, d, bias=False)

    def forward(self, x):
        a = self.o(torch.cat([self.q(x), self.k(x), self.v(x)], -1))
        return a + self.down(torch.nn.functional.silu(self.gate(a)) * self.up(a))


def _model(device, dtype=torch.float32):
    m = Block().to(device=device, dtype=dtype)
    quantize_(m, hlwq_q5())
    return m


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fullgraph_matches_eager(device, dtype):
    torch._dynamo.reset()
    m = _model(device, dtype)
    x = torch.randn(3, 5, 256, device=device, dtype=dtype)
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, fullgraph=True)(x)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_error(compiled, eager) < tol


def test_recompiles():
    torch._dynamo.reset()
    m = _model("cpu")
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(m, backend=counter, fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            compiled(torch.randn(2, 256))
        assert counter.frame_count == 1, "same shape must not recompile"
        compiled(torch.randn(5, 256))
        compiled(torch.randn(9, 256))
        compiled(torch.randn(17, 256))
    assert counter.frame_count == 2, "a new batch size recompiles once, with a dynamic batch"


def _count_in_inductor_graph(m, x, op, grad=False):
    seen = []

    def count(graph):
        seen.append(sum(1 for n in graph.nodes if n.target is op))

    torch._dynamo.reset()
    with inductor_config.patch(post_grad_custom_post_pass=count), torch.set_grad_enabled(grad):
        torch.compile(m, fullgraph=True)(x)
    return seen


def test_each_projection_is_one_opaque_op():
    m = _model("cpu")
    x = torch.randn(4, 256)
    linear = _count_in_inductor_graph(m, x, torch.ops.hlwq.linear_inference.default)
    fwht = _count_in_inductor_graph(m, x, torch.ops.hlwq.fwht.default)
    # 7 projections, each one hlwq.linear_inference (no_grad: hlwq.linear without autograd; it rotates its
    # input itself)
    assert linear == [7]
    assert fwht == [0]
    assert _count_in_inductor_graph(m, x, torch.ops.hlwq.linear.default) == [0]


def test_compiled_with_gradients_runs_the_op_with_autograd():
    """A compiled model whose input needs a gradient runs ``hlwq.linear`` (its backward registered), not
    ``hlwq.linear_inference``, and its gradients are eager's."""
    m = _model("cpu").requires_grad_(False)
    x = torch.randn(4, 256, requires_grad=True)
    assert _count_in_inductor_graph(m, x, torch.ops.hlwq.linear_inference.default, grad=True) == [0]
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True)
    g = torch.randn(4, 256)
    compiled(x).backward(g)
    got, x.grad = x.grad, None
    m(x).backward(g)
    torch.testing.assert_close(got, x.grad, rtol=1e-4, atol=1e-4)


def _hlwq_ops_recorded(m, x, record):
    if record == "export":
        graph = torch.export.export(m, (x,)).graph
        return sorted(str(n.target) for n in graph.nodes if str(n.target).startswith("hlwq."))
    traced = torch.jit.trace(m, (x,), check_trace=False)
    return sorted(n.kind() for n in traced.inlined_graph.nodes() if n.kind().startswith("hlwq::"))


@pytest.mark.parametrize("record", ["export", "jit.trace"])
def test_recorded_programs_keep_autograd(record):
    """``torch.export`` and ``torch.jit.trace`` record ``hlwq.linear`` even for an input that needs no gradient:
    neither guards on ``requires_grad``, and the program they make may run later with one."""
    m = _model("cpu").requires_grad_(False)
    x = torch.randn(4, 256)
    ops = _hlwq_ops_recorded(m, x, record)
    assert len(ops) == 7 and all("linear_inference" not in op for op in ops), ops
    assert all(op in ("hlwq.linear.default", "hlwq::linear") for op in ops), ops


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transform", ["jvp", "grad"])
def test_compiled_torch_func_transforms_through_an_hlwq_linear(device, transform):
    """``torch.func.jvp`` / ``grad`` inside a compiled function (one graph): the tangent rule and the backward of
    the eager path (the tangent was zero, ``grad`` failed while tracing)."""
    from hlwq_ops import HLWQTensor

    torch._dynamo.reset()
    w = HLWQTensor.from_hp(torch.randn(24, 200, device=device))
    x, t, g = (torch.randn(3, n, device=device) for n in (200, 200, 24))
    f = lambda x: torch.nn.functional.linear(x, w)  # noqa: E731
    if transform == "jvp":
        fn, expected = (lambda x: torch.func.jvp(f, (x,), (t,))[1]), t @ w.dequantize().T
    else:
        fn, expected = (lambda x: torch.func.grad(lambda x: (f(x) * g).sum())(x)), g @ w.dequantize()
    assert rel_error(torch.compile(fn, fullgraph=True)(x), expected) < (1e-5 if device == "cpu" else 1e-2)


def test_vmap_of_a_quantized_module_compiles_in_one_graph():
    """``vmap(module)`` reprs the module it maps; the quantized module's repr, which reprs its HLWQ weight, stopped
    Dynamo ("repr() on tensor"). Outside a compile the repr is whole."""
    torch._dynamo.reset()
    layer = torch.nn.Linear(256, 32).eval()
    quantize_(layer, hlwq_q5())
    x = torch.randn(4, 256)
    with torch.no_grad():
        compiled = torch.compile(lambda x: torch.func.vmap(layer)(x), fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(compiled, torch.func.vmap(layer)(x))
    assert repr(layer).endswith("weight=HLWQTensor(shape=(32, 256), bits=5, block_size=128, dtype=torch.float32, "
                                "device=cpu))")
