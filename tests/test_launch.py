"""hlwq_ops.kernels.launch: the key a compiled kernel is reused under, and reuse on a GPU."""

import importlib

import pytest
import torch

from hlwq_ops.kernels import launch as launch_module
from hlwq_ops.kernels.gemv import gemv, gemv_ref

from ._utils import rel_error

gemv_module = importlib.import_module("hlwq_ops.kernels.gemv")  # (hlwq_ops.kernels.gemv is the function)


def test_spec_tells_apart_what_triton_specializes_on():
    base = torch.zeros(64, dtype=torch.float32)
    aligned, unaligned = base[:8], base[1:9]  # data pointers 0 and 4 bytes past a 16-byte boundary
    spec = launch_module._spec
    assert spec(aligned) != spec(unaligned)
    assert spec(aligned) != spec(aligned.to(torch.bfloat16))
    for other in (1, None, 0.5, object()):  # integers are a Launch's own; anything else takes Triton's path
        assert spec(other) is launch_module._UNKNOWN


def test_config_key_tells_apart_equal_values_of_other_types():
    key = launch_module.config_key
    assert key(dict(NORM_ACC=True)) != key(dict(NORM_ACC=1))
    assert key(dict(ROWS=64)) != key(dict(ROWS=64.0))
    assert key(dict(ROWS=64, R=4)) == key(dict(ROWS=64, R=4))
    assert launch_module.config_of(key(dict(ROWS=64, R=4, EARLY=True))) == dict(ROWS=64, R=4, EARLY=True)


def test_cdiv():
    assert [launch_module.cdiv(a, 16) for a in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


@pytest.fixture
def seen_plans(monkeypatch):
    """Every GEMV plan made during the test, in order."""
    seen = []
    original = gemv_module._plan

    def recording(*key):
        plan = original(*key)
        if not any(p is plan for p in seen):
            seen.append(plan)
        return plan

    monkeypatch.setattr(gemv_module, "_plan", recording)
    return seen


def test_interpreted_kernels_take_tritons_path(monkeypatch, seen_plans):
    """On the CPU (TRITON_INTERPRET=1) nothing is cached: the interpreter's functions are not JITFunctions."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter runs on machines without a GPU")
    monkeypatch.setattr(launch_module, "_DIRECT", True)
    x = torch.randn(1, 256)
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    config = dict(VEC=1, R=2, ROWS=4, num_warps=2)
    for _ in range(2):
        y = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
        assert rel_error(y, gemv_ref(x, qdata, scale, None, 5, 128)) < 1e-5
    assert len(seen_plans) == 1  # the second call found the first one's plan
    assert not seen_plans[0].launch._compiled


def test_a_plan_is_made_once_per_call_signature(seen_plans):
    """Calls of one signature share a plan (whatever the output dtype: the output is made per call); another M, bias
    or config gets its own."""
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    config = dict(VEC=1, R=2, ROWS=4, num_warps=2)
    x = torch.randn(2, 256)
    for _ in range(2):
        gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
    assert len(seen_plans) == 1
    assert gemv(x, qdata, scale, None, 5, 128, None, torch.bfloat16, config).dtype == torch.bfloat16
    assert len(seen_plans) == 1
    gemv(x[:1], qdata, scale, None, 5, 128, None, torch.float32, config)
    gemv(x, qdata, scale, torch.randn(8), 5, 128, None, torch.float32, config)
    gemv(x, qdata, scale, None, 5, 128, None, torch.float32, dict(config, ROWS=8))
    assert len(seen_plans) == 4
    assert seen_plans[1].out_shape == (1, 8) and seen_plans[3].launch.grid[0] == 1


def test_a_bad_config_is_refused_every_call():
    """A plan is not made (and so not cached) for a config the wrapper refuses: the second call is refused too."""
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    for _ in range(2):
        with pytest.raises(ValueError, match="MB"):
            gemv(torch.randn(1, 256), qdata, scale, None, 5, 128, None, torch.float32,
                 dict(VEC=1, R=2, ROWS=4, num_warps=2, MB=3))


def test_a_config_checked_as_one_type_is_checked_again_as_another(monkeypatch):
    """A plan checked for NORM_ACC=True does not serve NORM_ACC=1 (equal as a key, refused by ws_rs's check). The
    Gluon kernel is replaced by a stand-in, so this runs on the CPU."""
    from hlwq_ops.kernels import wsmma

    if wsmma.gluon is None:
        pytest.skip("this Triton has no Gluon")
    wsrs = importlib.import_module("hlwq_ops.kernels.wsrs")

    class FakeKernel:
        def __getitem__(self, grid):
            return lambda *args, **meta: None

    monkeypatch.setattr(wsrs, "_rs_kernel", FakeKernel())
    M, N, K = 16, 128, 256
    xp, qdata = torch.zeros(M, K, dtype=torch.bfloat16), torch.zeros(N, K * 5 // 8, dtype=torch.uint8)
    scale = torch.ones(N, K // 128, dtype=torch.float16)
    config = dict(BM=16, SPLIT_K=1, QSTAGES=4, XSTAGES=2, XBOX=64, REGS=168)
    wsrs.ws_rs(xp, qdata, scale, None, 5, 128, torch.bfloat16, dict(config, NORM_ACC=True))
    with pytest.raises(ValueError, match="NORM_ACC must be a bool"):
        wsrs.ws_rs(xp, qdata, scale, None, 5, 128, torch.bfloat16, dict(config, NORM_ACC=1))


@pytest.mark.gpu
@pytest.mark.skipif(not launch_module._DIRECT, reason="direct launches are checked Triton versions only")
def test_gpu_direct_launch_is_triton_launch(seen_plans):
    """The GEMV launched again straight into its compiled kernel gives the bits Triton's launch gives, and an
    activation row 4 bytes past a 16-byte boundary (which Triton compiles apart) is not served by the aligned
    kernel: its key differs and its result is right."""
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(300, 512, device="cuda"), 5, 128)
    config = dict(VEC=4, R=8, ROWS=64, num_warps=4)
    buf = torch.randn(4 * 512 + 1, device="cuda")
    for x in (buf[:512].view(1, 512), buf[1:513].view(1, 512), buf[:1024].view(2, 512)):
        ref = gemv_ref(x, qdata, scale, None, 5, 128)
        first = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
        compiled = dict(seen_plans[-1].launch._compiled)
        again = gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)  # the direct launch
        assert seen_plans[-1].launch._compiled == compiled and len(compiled) >= 1
        assert torch.equal(first, again)
        assert rel_error(again, ref) < 1e-5
    assert len(seen_plans) == 2  # M = 1 (aligned and not) and M = 2
    keys = list(seen_plans[0].launch._compiled)
    assert {key[1][0] for key in keys} == {(torch.float32, True), (torch.float32, False)}  # x aligned and not


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
