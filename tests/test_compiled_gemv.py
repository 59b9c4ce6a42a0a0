"""``hlwq.linear_compiled``: compiled graphs' HLWQ linears, the decode-size GEMV launched by Inductor itself."""

import pytest
import torch
from torch._inductor.utils import fresh_cache, run_and_get_code
from torch._subclasses.functional_tensor import FunctionalTensor
from torchao.quantization import quantize_

from hlwq_ops import HLWQConfig, kernels

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
def test_inductor_launches_the_gemv(bits, M, bias, dtype, monkeypatch):
    """At decode sizes the compiled graph launches the GEMV from Inductor's code (no opaque op, no copy of any
    operand), with the eager GEMV's result to the bit (forced at M = 2, where eager tunes the tensor-core kernels
    beside it)."""
    layer = _layer(4100, 4608, bits, bias, dtype)  # N not a multiple of the tile; large: split K
    x = torch.randn(M, 4608, device="cuda", dtype=dtype)
    w = layer.weight
    with torch.no_grad():
        traced = kernels.compiled.traced_gemv(x, w.qdata, w.scale, layer.bias, bits, 128, 4608, None)
    assert traced is not None and traced.plan.counters > 0
    with torch.no_grad(), monkeypatch.context() as forced:
        forced.setenv("HLWQ_PATH", "gemv")
        eager = layer(x)
    y, code = _compiled_code(layer, x)
    assert "_gemv_kernel" in code and "linear_inference" not in code
    assert "clone" not in code and "copy_" not in code
    assert torch.equal(y, eager)


@pytest.mark.gpu
@pytest.mark.parametrize("M", [8, 16])
def test_other_sizes_call_the_opaque_op(M):
    """Past the GEMV's rows, and at M = 3..8 where eager tunes the GEMV beside the tensor-core kernels on a small
    layer, the graph calls the opaque op (and its tuner)."""
    layer = _layer(512, 1024, 5, False, torch.bfloat16)
    x = torch.randn(M, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = layer(x)
    y, code = _compiled_code(layer, x)
    assert "linear_inference" in code and "_gemv_kernel" not in code
    assert torch.equal(y, eager)


@pytest.mark.gpu
def test_under_cuda_graphs():
    """``mode="reduce-overhead"``: CUDA graphs are not skipped, and replays match eager on new inputs."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layer = _layer(2048, 14336, 5, True, torch.bfloat16)  # split K: the graph zeroes its own counters
    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    with torch.no_grad(), fresh_cache():  # (the flag, changed in-process, tags no cache)
        for i in range(4):
            x = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)
            if i == 0:
                y, code = run_and_get_code(compiled, x)
                assert "_gemv_kernel" in "\n".join(code) and "linear_inference" not in "\n".join(code)
            else:
                y = compiled(x)
            assert torch.equal(y.clone(), layer(x))
    assert not torch._dynamo.utils.counters["inductor"]["cudagraph_skips"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 16])
@pytest.mark.parametrize("custom", [False, True])
def test_opcheck(device, M, custom):
    """The op as a direct call: the GEMV launched through ``wrap_triton`` on CUDA at M = 1, the opaque op's
    implementation elsewhere; the standard codebook or a custom one."""
    _, qdata, scale = _packed(40, 200, 5, device)
    table = torch.tensor(sorted(torch.randn(32).tolist()), device=device) if custom else None
    x = torch.randn(M, 200, device=device, dtype=torch.bfloat16)
    bias = torch.randn(40, device=device, dtype=torch.bfloat16)
    args = (x, qdata, scale, bias, 5, 128, 200, table)
    torch.library.opcheck(torch.ops.hlwq.linear_compiled.default, args, atol=5e-2, rtol=5e-2)
    reference = torch.ops.hlwq.linear_inference(*args)
    assert torch.equal(torch.ops.hlwq.linear_compiled(*args), reference)


def test_compiled_layers_ask_for_the_traced_gemv(monkeypatch):
    """A compiled graph's HLWQ linear reaches ``hlwq.linear_compiled``, whose body asks :func:`traced_gemv` for the
    launch, also where AOTAutograd traces the graph Inductor compiles: it dispatches the HLWQTensor's linear on
    functional tensors, and on torch 2.11 ``torch.compiler.is_compiling()`` is False there. The first form asked
    that alone, and no GPU graph launched the GEMV (RESULTS 41b). On the CPU, where ``traced_gemv`` gives None, the
    op's body then calls ``hlwq.linear_inference``."""
    seen = []
    traced_gemv = kernels.compiled.traced_gemv

    def spy(x, *args):
        seen.append(type(x))
        return traced_gemv(x, *args)

    monkeypatch.setattr(kernels.compiled, "traced_gemv", spy)
    layer = torch.nn.Linear(256, 40, dtype=torch.bfloat16)
    quantize_(layer, HLWQConfig(bits=5))
    x = torch.randn(1, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = layer(x)
        assert not seen  # an eager call runs the op's implementation directly
        torch._dynamo.reset()
        with fresh_cache():  # (a cached graph is not traced again)
            y = torch.compile(layer, fullgraph=True)(x)
    assert FunctionalTensor in seen and torch.Tensor not in seen
    assert torch.equal(y, eager)


def test_compiling_holds_wherever_torch_compile_traces():
    """``_compiling()`` holds under the compile's tracing context (where AOTAutograd traces an HLWQTensor's linear;
    on torch 2.11 ``torch.compiler.is_compiling()`` is False there) and nowhere else."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hlwq_ops import ops

    assert not ops._compiling()
    with tracing(TracingContext(FakeTensorMode())):
        assert ops._compiling()


@pytest.mark.parametrize(
    "N, K, M, bits, bias, custom, config",
    [
        (40, 1100, 1, 5, True, False, {"VEC": 4, "R": 8, "ROWS": 8, "num_warps": 4}),  # split K: counters
        (40, 1100, 1, 5, False, True, {"VEC": 4, "R": 8, "ROWS": 8, "num_warps": 4}),  # a custom codebook
        (300, 2100, 2, 4, True, False, {"VEC": 4, "R": 8, "ROWS": 8, "num_warps": 4, "MB": 2}),  # two rows a program
        (40, 200, 1, 5, True, False, {"VEC": 16, "R": 4, "ROWS": 4, "num_warps": 4}),  # one slice: no workspace
    ],
)
def test_the_traced_launch_matches_the_opaque_op(monkeypatch, N, K, M, bits, bias, custom, config):
    """The launch the op hands Inductor, run eagerly (in the interpreter on the CPU): kernel arguments, the codebook
    it makes, the zeroed counters and the stand-ins for unused pointers give ``hlwq.linear_inference``'s result."""
    from hlwq_ops.kernels.gemv import _gemv_kernel

    try:
        torch.library.wrap_triton(_gemv_kernel)
    except RuntimeError:  # (torch 2.11 takes no kernel of Triton's interpreter; 2.13 does)
        pytest.skip("this torch's wrap_triton refuses the interpreter's kernels")
    monkeypatch.setattr(kernels.compiled, "_launches_on", lambda device: True)
    monkeypatch.setattr(kernels.tuning, "tuned", lambda *args: config)
    cb = torch.tensor(sorted(torch.randn(2**bits).tolist())) if custom else None
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(N, K), bits, 128, cb)
    x = torch.randn(M, K, dtype=torch.bfloat16)
    b = torch.randn(N, dtype=torch.bfloat16) if bias else None
    traced = kernels.compiled.traced_gemv(x, qdata, scale, b, bits, 128, K, cb)
    assert traced is not None and bool(traced.plan.counters) == (config["VEC"] == 4)
    y = torch.ops.hlwq.linear_compiled(x, qdata, scale, b, bits, 128, K, cb)
    reference = torch.ops.hlwq.linear_inference(x, qdata, scale, b, bits, 128, K, cb)
    # the same sums up to float32 rounding, each rounded once to bfloat16
    torch.testing.assert_close(y, reference, atol=2**-7 * reference.abs().max().item(), rtol=2**-7)


def test_the_codebook_is_solved_outside_the_trace():
    """The standard codebook's values, if not yet cached, are solved with torch ops (Newton steps and ``.item()``),
    which a trace on fake tensors cannot run: the op's table is solved outside its tracing modes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hlwq_ops import ops
    from hlwq_ops.codebook import lloyd_max_gaussian

    lloyd_max_gaussian.cache_clear()
    with FakeTensorMode():
        table = ops._standard_table(5, torch.device("cpu"))
    assert table.shape == (32,) and table.dtype == torch.float32
    assert lloyd_max_gaussian.cache_info().currsize  # solved for real, and cached


def test_no_compiled_route_under_vmap():
    """Under a functorch transform a compiled graph keeps ``hlwq.linear_inference``, which has a vmap rule:
    ``hlwq.linear_compiled`` has none, and functorch would fall back to a call per sample."""
    import warnings

    layer = torch.nn.Linear(256, 40, dtype=torch.bfloat16)
    quantize_(layer, HLWQConfig(bits=5))
    x = torch.randn(3, 1, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = torch.vmap(layer)(x)
        torch._dynamo.reset()
        with warnings.catch_warnings(record=True) as caught, fresh_cache():
            warnings.simplefilter("always")
            y = torch.compile(lambda x: torch.vmap(layer)(x))(x)
    assert not [w for w in caught if "batching rule" in str(w.message)]
    assert torch.equal(y, eager)


def test_cpu_graphs_call_the_opaque_op():
    """On the CPU a compiled graph keeps ``hlwq.linear_inference`` (the reference math): the traced GEMV is CUDA's."""
    _, qdata, scale = _packed(40, 256, 5)
    x = torch.randn(1, 256)
    torch._dynamo.reset()
    with fresh_cache():
        y, code = run_and_get_code(torch.compile(lambda x: torch.ops.hlwq.linear_compiled(
            x, qdata, scale, None, 5, 128, 256), fullgraph=True), x)
    assert "linear_inference" in "\n".join(code)
    assert torch.equal(y, torch.ops.hlwq.linear_inference(x, qdata, scale, None, 5, 128, 256))


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("1", True)])
def test_opt_in(monkeypatch, value, expected):
    monkeypatch.setenv("HLWQ_COMPILED_GEMV", value)
    assert kernels.compiled._compiled_gemv_requested() is expected


def test_opt_in_refuses_other_values(monkeypatch):
    monkeypatch.setenv("HLWQ_COMPILED_GEMV", "yes")
    with pytest.raises(ValueError, match="HLWQ_COMPILED_GEMV must be 0 or 1"):
        kernels.compiled._compiled_gemv_requested()


_COMPILE_ONE_LAYER = """
import json
import torch
from torch._dynamo.utils import counters
from torchao.quantization import quantize_
from hlwq_ops import HLWQConfig
layer = torch.nn.Linear(256, 64, bias=False)
quantize_(layer, HLWQConfig(bits=5))
with torch.no_grad():
    torch.compile(layer)(torch.randn(1, 256))
print(json.dumps([torch.compiler.config.cache_key_tag, sorted(counters["aot_autograd"])]))
"""


def test_the_flag_keys_the_compile_caches(tmp_path):
    """A process with ``HLWQ_COMPILED_GEMV=1`` is not served the graph that a process without it left in the disk
    caches (both routes have one AOTAutograd key but for the tag); a process with the same setting is."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]  # this checkout's hlwq_ops, whatever is installed

    def compile_in_a_process(flag):
        env = dict(os.environ, HLWQ_COMPILED_GEMV=flag, TORCHINDUCTOR_CACHE_DIR=str(tmp_path),
                   TORCHINDUCTOR_AUTOGRAD_CACHE="1", TORCHINDUCTOR_FX_GRAPH_CACHE="1",
                   PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
        for name in ("TORCH_COMPILE_CACHE_KEY_TAG", "TORCHINDUCTOR_FORCE_DISABLE_CACHES"):
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-c", _COMPILE_ONE_LAYER], env=env, cwd=root, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        tag, counted = json.loads(done.stdout.splitlines()[-1])
        return tag, "autograd_cache_hit" in counted

    assert compile_in_a_process("0") == ("", False)
    assert compile_in_a_process("1") == (kernels.compiled.CACHE_TAG, False), "the other setting's graph was served"
    assert compile_in_a_process("1") == (kernels.compiled.CACHE_TAG, True), "the same setting: served from the cache"


def test_the_tag_keeps_the_users_own():
    # (torch's own patch: pytest's monkeypatch deletes a config module's setting on undo, breaking later compiles)
    before = torch.compiler.config.cache_key_tag
    with torch.compiler.config.patch(cache_key_tag="mine"):
        kernels.compiled._tag_compile_caches()
        kernels.compiled._tag_compile_caches()
        assert torch.compiler.config.cache_key_tag == f"mine+{kernels.compiled.CACHE_TAG}"
    assert torch.compiler.config.cache_key_tag == before


def test_the_compile_caches_see_the_kernel():
    """AOTAutograd's cache keys a ``triton_op`` on the kernels its source wraps by name: a changed GEMV source must
    not be served from an old entry."""
    from torch._library.triton import get_triton_kernels_for_op

    from triton.runtime.jit import JITFunction

    from hlwq_ops.kernels.gemv import _gemv_kernel

    if not isinstance(_gemv_kernel, JITFunction):
        pytest.skip("TRITON_INTERPRET=1: the scan records JITFunctions, the interpreter makes other kernels")
    assert _gemv_kernel in get_triton_kernels_for_op("hlwq::linear_compiled")
