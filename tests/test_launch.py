"""hlwq_ops.kernels.launch: the key a compiled kernel is reused under, and reuse on a GPU."""

import pytest
import torch

from hlwq_ops.kernels import launch as launch_module
from hlwq_ops.kernels.gemv import _gemv_kernel, gemv, gemv_ref

from ._utils import rel_error


def test_spec_tells_apart_what_triton_specializes_on():
    base = torch.zeros(64, dtype=torch.float32)
    aligned, unaligned = base[:8], base[1:9]  # data pointers 0 and 4 bytes past a 16-byte boundary
    spec = launch_module._spec
    assert spec(aligned) != spec(unaligned)
    assert spec(aligned) != spec(aligned.to(torch.bfloat16))
    assert len({spec(1), spec(16), spec(17), spec(2**31), spec(2**63)}) == 5  # ==1, %16, neither, i64, u64
    assert spec(True) != spec(1) and spec(True) != spec(False)
    assert spec(None) is None and spec(0.5) is float
    assert spec(object()) is launch_module._UNKNOWN  # an argument it does not know: Triton's path


def test_interpreted_kernels_take_tritons_path(monkeypatch):
    """On the CPU (TRITON_INTERPRET=1) nothing is cached: the interpreter's functions are not JITFunctions."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter runs on machines without a GPU")
    monkeypatch.setattr(launch_module, "_DIRECT", True)
    launch_module._COMPILED.clear()
    x = torch.randn(1, 256)
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    config = dict(VEC=1, R=2, ROWS=4, num_warps=2)
    for _ in range(2):
        y = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
        assert rel_error(y, gemv_ref(x, qdata, scale, None, 5, 128)) < 1e-5
    assert not launch_module._COMPILED


@pytest.mark.gpu
@pytest.mark.skipif(not launch_module._DIRECT, reason="direct launches are checked Triton versions only")
def test_gpu_direct_launch_is_triton_launch():
    """The GEMV launched again straight into its compiled kernel gives the bits Triton's launch gives, and an
    activation row 4 bytes past a 16-byte boundary (which Triton compiles apart) is not served by the aligned
    kernel: its key differs and its result is right."""
    launch_module._COMPILED.clear()
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(300, 512, device="cuda"), 5, 128)
    config = dict(VEC=4, R=8, ROWS=64, num_warps=4)
    buf = torch.randn(4 * 512 + 1, device="cuda")
    for x in (buf[:512].view(1, 512), buf[1:513].view(1, 512), buf[:1024].view(2, 512)):
        ref = gemv_ref(x, qdata, scale, None, 5, 128)
        first = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
        before = len(launch_module._COMPILED)
        again = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)  # the direct launch
        assert len(launch_module._COMPILED) == before
        assert torch.equal(first, again)
        assert rel_error(again, ref) < 1e-5
    keys = [k for k in launch_module._COMPILED if k[0] is _gemv_kernel]
    assert {k[2][0] for k in keys} == {(torch.float32, True), (torch.float32, False)}  # x aligned and not


def test_a_launch_hook_takes_tritons_path():
    """A profiler's launch hook must see every launch, so with one set nothing goes around Triton."""
    import triton

    chain = triton.knobs.runtime.launch_enter_hook
    if not hasattr(chain, "add"):
        pytest.skip(f"Triton {triton.__version__} keeps no chain of launch hooks")
    assert not launch_module._hooked()

    def hook(metadata):
        return None

    chain.add(hook)
    try:
        assert launch_module._hooked()
    finally:
        chain.remove(hook)
    assert not launch_module._hooked()
