"""``hlwq.linear_compiled``: compiled graphs' HLWQ linears, the decode-size GEMV launched by Inductor itself."""

import pytest
import torch
from torch._inductor.utils import fresh_cache, run_and_get_code
from torchao.quantization import quantize_

from hlwq_ops import HLWQConfig, kernels
from hlwq_ops.codebook import codebook
from hlwq_ops.kernels.common import counter_buffer

from ._utils import DEVICES
from .test_ops import _packed


@pytest.fixture(autouse=True)
def compiled_gemv(monkeypatch):
    """These tests route compiled graphs through ``hlwq.linear_compiled``, as ``HLWQ_COMPILED_GEMV=1`` does."""
    monkeypatch.setattr(kernels.compiled, "COMPILED_GEMV", True)


def _layer(N, K, bits, bias, dtype):
    layer = torch.nn.Linear(K, N, bias=bias, device="cuda", dtype=dtype)
    quantize_(layer, HLWQConfig(bits=bits))
    return layer


def _compiled_code(fn, x):
    torch._dynamo.reset()
    with torch.no_grad(), fresh_cache():
        y, code = run_and_get_code(torch.compile(fn, fullgraph=True), x)
    return y, "\n".join(code)


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [3, 4, 5, 8])
@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_inductor_launches_the_gemv(bits, M, bias, dtype):
    """At decode sizes the compiled graph launches the GEMV from Inductor's code (no opaque op, no copy of any
    operand), with eager's result to the bit, and leaves the split-K counters at zero."""
    layer = _layer(4100, 4608, bits, bias, dtype)  # N not a multiple of the tile; large: split K
    x = torch.randn(M, 4608, device="cuda", dtype=dtype)
    w = layer.weight
    with torch.no_grad():
        traced = kernels.compiled.traced_gemv(x, w.qdata, w.scale, layer.bias, bits, 128, 4608, None)
    assert traced is not None and traced.plan.counters > 0
    with torch.no_grad():
        eager = layer(x)
    y, code = _compiled_code(layer, x)
    assert "_gemv_kernel" in code and "linear_inference" not in code
    assert "clone" not in code and "copy_" not in code
    assert torch.equal(y, eager)
    assert not counter_buffer(x.device).any()


@pytest.mark.gpu
def test_other_sizes_call_the_opaque_op():
    layer = _layer(512, 1024, 5, False, torch.bfloat16)
    x = torch.randn(16, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = layer(x)
    y, code = _compiled_code(layer, x)
    assert "linear_inference" in code and "_gemv_kernel" not in code
    assert torch.equal(y, eager)


@pytest.mark.gpu
def test_under_cuda_graphs():
    """``mode="reduce-overhead"``: CUDA graphs are not skipped for the counters the graph writes, and replays
    match eager on new inputs."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layer = _layer(2048, 14336, 5, True, torch.bfloat16)  # split K: the graph writes the counters
    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)
            assert torch.equal(compiled(x).clone(), layer(x))
    assert not torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]
    assert not counter_buffer(x.device).any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 16])
def test_opcheck(device, M):
    """The op as a direct call: the GEMV launched through ``wrap_triton`` on CUDA at M = 1, the opaque op's
    implementation elsewhere."""
    _, qdata, scale = _packed(40, 200, 5, device)
    table = torch.tensor(sorted(torch.randn(32).tolist()), device=device)
    counters = torch.zeros(4096, dtype=torch.int32, device=device)
    x = torch.randn(M, 200, device=device, dtype=torch.bfloat16)
    bias = torch.randn(40, device=device, dtype=torch.bfloat16)
    args = (x, qdata, scale, bias, 5, 128, 200, table, table, counters)
    torch.library.opcheck(torch.ops.hlwq.linear_compiled.default, args, atol=5e-2, rtol=5e-2)
    reference = torch.ops.hlwq.linear_inference(x, qdata, scale, bias, 5, 128, 200, table)
    assert torch.equal(torch.ops.hlwq.linear_compiled(*args), reference)
    assert not counters.any()


@pytest.mark.parametrize(
    "table, counters, match",
    [
        (torch.zeros(16), torch.zeros(8, dtype=torch.int32), r"table must be a \(32,\) float32 tensor"),
        (torch.zeros(32), torch.zeros(8), "counters must be a 1-D int32 tensor"),
    ],
)
def test_bad_table_or_counters(table, counters, match):
    _, qdata, scale = _packed(40, 200, 5)
    with pytest.raises(ValueError, match=match):
        torch.ops.hlwq.linear_compiled(torch.randn(1, 200), qdata, scale, None, 5, 128, 200, None, table, counters)


def test_cpu_graphs_call_the_opaque_op():
    """On the CPU a compiled graph keeps ``hlwq.linear_inference`` (the reference math): the traced GEMV is CUDA's."""
    _, qdata, scale = _packed(40, 256, 5)
    assert kernels.compiled.compiled_inputs(5, None, torch.device("cpu")) is None  # no counters made on the CPU
    fn = torch.compile(lambda x: torch.ops.hlwq.linear_compiled(x, qdata, scale, None, 5, 128, 256, None,
                                                                  codebook(5),
                                                                  torch.zeros(64, dtype=torch.int32)),
                       fullgraph=True)
    x = torch.randn(1, 256)
    assert torch.equal(fn(x), torch.ops.hlwq.linear_inference(x, qdata, scale, None, 5, 128, 256))


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("1", True)])
def test_opt_in(monkeypatch, value, expected):
    monkeypatch.setenv("HLWQ_COMPILED_GEMV", value)
    assert kernels.compiled._compiled_gemv_requested() is expected


def test_opt_in_refuses_other_values(monkeypatch):
    monkeypatch.setenv("HLWQ_COMPILED_GEMV", "yes")
    with pytest.raises(ValueError, match="HLWQ_COMPILED_GEMV must be 0 or 1"):
        kernels.compiled._compiled_gemv_requested()


def test_dynamo_lifts_the_counters_and_table(monkeypatch):
    """What ``linear_call`` reads while dynamo traces it (``compiled_inputs``: two module dicts) becomes graph inputs,
    not constants or graph breaks, and calls with new activations do not recompile. On CPU tensors (the op then runs
    its fallback), with a counter buffer and table registered for the CPU as ``note_weight`` does for a GPU."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from hlwq_ops.kernels import common

    cpu = torch.device("cpu")
    counters, table = torch.zeros(256, dtype=torch.int32), codebook(5, cpu)
    monkeypatch.setitem(common._COUNTERS, cpu, counters)
    monkeypatch.setitem(kernels.compiled._TABLES, (5, cpu), table)
    _, qdata, scale = _packed(40, 256, 5)

    def f(x):
        return torch.ops.hlwq.linear_compiled(x, qdata, scale, None, 5, 128, 256, None,
                                              *kernels.compiled.compiled_inputs(5, None, x.device))

    torch._dynamo.reset()
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, backend=backend, fullgraph=True)
    for _ in range(3):
        x = torch.randn(1, 256)
        assert torch.equal(compiled(x), torch.ops.hlwq.linear_inference(x, qdata, scale, None, 5, 128, 256))
    assert backend.frame_count == 1
    inputs = [n.name for n in backend.graphs[0].graph.nodes if n.op == "placeholder"]
    assert any("counters" in name for name in inputs) and any("tables" in name for name in inputs)


def test_the_compile_caches_see_the_kernel():
    """AOTAutograd's cache keys a ``triton_op`` on the kernels its source wraps by name: a changed GEMV source must
    not be served from an old entry."""
    from torch._library.triton import get_triton_kernels_for_op

    from triton.runtime.jit import JITFunction

    from hlwq_ops.kernels.gemv import _gemv_kernel

    if not isinstance(_gemv_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1: the scan records JITFunctions, the interpreter makes other kernels")
    assert _gemv_kernel in get_triton_kernels_for_op("hlwq::linear_compiled")
