"""hlwq_ops.kernels.launch: the key a compiled kernel is reused under, and reuse on a GPU."""

import importlib
import inspect

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
    assert spec(torch.nn.Parameter(aligned)) == spec(aligned)  # (a bias may be a Parameter)
    tma = launch_module.Tma(aligned.view(2, 4), (2, 4), "layout")
    assert spec(tma) == spec(launch_module.Tma(aligned.view(2, 4).clone(), (2, 4), "layout"))  # (not the pointer)
    assert spec(tma) not in (spec(tma._replace(block=(1, 4))), spec(tma._replace(layout="other")),
                             spec(tma._replace(tensor=aligned.view(2, 4).double())), spec(aligned))
    assert spec(tma._replace(block=[2, 4])) == spec(tma)  # (a list block: the same, hashable, key)
    for other in (1, None, 0.5, object()):  # integers are a Launch's own; anything else takes Triton's path
        assert spec(other) is launch_module._UNKNOWN
    # the launch key's specs (tensors inline): the same as _spec's, one per argument
    args = (aligned, unaligned, torch.nn.Parameter(aligned), tma, None)
    assert launch_module._specs(args) == tuple(spec(a) for a in args)


def test_direct_launch_keeps_each_descriptor_expansion_per_pointer_and_geometry(monkeypatch):
    """What Triton's launcher makes of a TMA descriptor (a CUtensorMap, shape, strides) is made once per descriptor
    argument, data pointer, shape and strides -- a function of those and the compiled kernel's metadata alone -- and
    not kept without metadata (then it holds the tensor). Triton's expansion is replaced by a stand-in here."""
    import triton.backends.nvidia.driver as driver

    made = []

    def expansion(desc, meta):
        made.append((desc.tensor.data_ptr(), tuple(desc.tensor.shape), meta))
        return [("map", desc.tensor.data_ptr(), meta), *desc.tensor.shape, *desc.tensor.stride()]

    monkeypatch.setattr(driver, "make_tensordesc_arg", expansion, raising=False)
    monkeypatch.setattr(launch_module.Tma, "descriptor", lambda self: self)
    launched = []
    direct = launch_module.DirectLaunch(None, lambda *args: launched.append(args), ("head",), {0: "meta0", 2: None})
    buf = torch.zeros(64)
    a, b = buf[:32].view(4, 8), buf[32:].view(4, 8)
    tma = launch_module.Tma
    for _ in range(2):
        direct((1, 1, 1), 7, (tma(a, (4, 8), None), buf, tma(a, (4, 8), None)), (3, "C"))
    assert launched[-1] == (1, 1, 1, 7, "head", ("map", a.data_ptr(), "meta0"), 4, 8, 8, 1, buf,
                            ("map", a.data_ptr(), None), 4, 8, 8, 1, 3, "C")
    assert made == [(a.data_ptr(), (4, 8), "meta0"), (a.data_ptr(), (4, 8), None), (a.data_ptr(), (4, 8), None)]
    direct((1, 1, 1), 7, (tma(b, (4, 8), None), buf, tma(a, (4, 8), None)), ())  # another pointer
    direct((1, 1, 1), 7, (tma(a.reshape(8, 4), (4, 8), None), buf, tma(a, (4, 8), None)), ())  # another shape
    assert [m[:2] for m in made[3::2]] == [(b.data_ptr(), (4, 8)), (a.data_ptr(), (8, 4))]
    assert len(direct.expansions) == 3
    wide = buf.view(4, 16)[:, :8]  # a's pointer and shape, other strides
    direct((1, 1, 1), 7, (tma(wide, (4, 8), None), buf, tma(a, (4, 8), None)), ())
    assert launched[-1][5:10] == (("map", a.data_ptr(), "meta0"), 4, 8, 16, 1)
    short = buf[:24].view(3, 8)  # a's pointer and strides, another shape
    direct((1, 1, 1), 7, (tma(short, (4, 8), None), buf, tma(a, (4, 8), None)), ())
    assert launched[-1][5:10] == (("map", a.data_ptr(), "meta0"), 3, 8, 8, 1)
    assert len(direct.expansions) == 5
    monkeypatch.setattr(launch_module.DirectLaunch, "KEEP", 5)
    direct((1, 1, 1), 7, (tma(b.reshape(8, 4), (4, 8), None), buf, tma(a, (4, 8), None)), ())
    assert len(direct.expansions) == 1  # (cleared when full)


def _wrapped(launcher, tensordesc_indices, tensordesc_meta):
    """A stand-in for Triton 3.6's ``wrap_handle_tensordesc``: a closure over these three names."""

    def inner(*args):
        return launcher(*args), tensordesc_indices, tensordesc_meta

    return inner


def test_direct_takes_the_c_launcher_and_each_descriptors_metadata_from_tritons_launcher():
    """``direct`` finds the C launcher inside Triton's descriptor wrapper and gives each descriptor argument its own
    metadata (the wrapper hands them out in argument order, whatever order the set of indices iterates in), puts the
    cooperative-grid and PDL flags where the C launcher's format has them, and declines kernels with scratch buffers
    and launchers it does not know. Stand-ins for the compiled kernel and its launcher: this runs on the CPU."""
    from types import SimpleNamespace

    def compiled(launch, scratch=0):
        launcher = SimpleNamespace(global_scratch_size=scratch, profile_scratch_size=0, launch=launch,
                                   launch_cooperative_grid="coop", launch_pdl="pdl")
        return SimpleNamespace(run=launcher, function="function", packed_metadata="packed")

    c_launch = print  # (a builtin: what make_launcher's module gives)
    found = launch_module.direct(compiled(_wrapped(c_launch, {7, 2, 0}, ["for 0", "for 2", "for 7"])))
    assert found.c_launch is c_launch and found.metadata == {0: "for 0", 2: "for 2", 7: "for 7"}
    assert found.head == ("function", "coop", "pdl", None, None, "packed", None, None, None)
    assert launch_module.direct(compiled(_wrapped(c_launch, {1}, None))).metadata == {1: None}
    plain = launch_module.direct(compiled(c_launch))  # no descriptor arguments: the C launcher itself
    assert plain.c_launch is c_launch and plain.metadata == {}
    assert launch_module.direct(compiled(c_launch, scratch=64)) is None
    assert launch_module.direct(compiled(lambda *args: c_launch(*args))) is None  # another wrapper


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
    original = gemv_module.gemv_plan

    def recording(*key):
        plan = original(*key)
        if not any(p is plan for p in seen):
            seen.append(plan)
        return plan

    monkeypatch.setattr(gemv_module, "gemv_plan", recording)
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
    or config gets its own. (On the GPU where there is one: its kernels take no CPU tensors.)"""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256, device=device), 5, 128)
    config = dict(VEC=1, R=2, ROWS=4, num_warps=2)
    x = torch.randn(2, 256, device=device)
    for _ in range(2):
        gemv(x, qdata, scale, None, 5, 128, None, torch.float32, config)
    assert len(seen_plans) == 1
    assert gemv(x, qdata, scale, None, 5, 128, None, torch.bfloat16, config).dtype == torch.bfloat16
    assert len(seen_plans) == 1
    gemv(x[:1], qdata, scale, None, 5, 128, None, torch.float32, config)
    gemv(x, qdata, scale, torch.randn(8, device=device), 5, 128, None, torch.float32, config)
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


@pytest.mark.gpu
@pytest.mark.skipif(not launch_module._DIRECT, reason="direct launches are checked Triton versions only")
def test_gpu_direct_launch_with_descriptors_is_triton_launch(monkeypatch):
    """The register-operand ws kernel (three TMA descriptors) launched straight into its C launcher, its descriptors'
    expansions kept, gives the bits of Triton's launch for two weights taken in turn (each its own expansions) and for
    new activations at an address earlier ones had (a kept expansion, the right result)."""
    from hlwq_ops.kernels import tuning, wsmma, wsrs
    from hlwq_ops.kernels.wgmma import permute_activations

    if not wsmma.runs_on(torch.device("cuda")):
        pytest.skip("the warp-specialized kernels need sm_90 and Gluon")
    plans = []
    original = wsrs._plan
    monkeypatch.setattr(wsrs, "_plan", lambda *key: plans.append(original(*key)) or plans[-1])
    N, K, M = 1000, 1024, 16
    weights = [torch.ops.hlwq.quantize(torch.randn(N, K, device="cuda"), 5, 128) for _ in range(2)]
    config = tuning.candidates("wsrs", M, N, K, 132, 5)[0]
    span = wsrs.activation_span(config)
    buffers = [torch.empty(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    for step in range(4):  # new activations in one of two buffers: the second time at each address, kept expansions
        xp = buffers[step % 2]
        xp.copy_(permute_activations(torch.randn(M, K, device="cuda"), torch.bfloat16, span))
        for qdata, scale in weights:
            with monkeypatch.context() as triton_path:
                triton_path.setattr(launch_module, "_DIRECT", False)
                by_triton = wsrs.ws_rs(xp, qdata, scale, None, 5, 128, torch.float32, config)
            direct = wsrs.ws_rs(xp, qdata, scale, None, 5, 128, torch.float32, config)
            assert torch.equal(by_triton, direct)
            ref = wsrs.ws_rs_ref(xp, qdata, scale, None, 5, span, config.get("NORM_ACC", True))
            assert rel_error(direct, ref) < 1e-5
    directs = [d for launch in {id(p.launch): p.launch for p in plans}.values() for d in launch._compiled.values()]
    assert directs and all(not hasattr(d.c_launch, "__code__") for d in directs)  # the C launcher itself
    assert all(len(d.metadata) == 3 for d in directs) and [len(d.expansions) for d in directs] == [6]  # 2 x + 2 x 2 w


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


@pytest.mark.parametrize("wrapper", ["tc_gemv", "wgmma", "mma", "dequantize_rotated"])
def test_each_wrapper_plans_a_call_signature_once(wrapper):
    """The tensor-core GEMV, the wgmma kernel, the general tensor-core kernel and the dequantize kernel (planned since
    session 41) make one plan per call signature, reused with the same result; another M gets its own."""
    from hlwq_ops.kernels import dequant, tcgemv
    from hlwq_ops.kernels.wgmma import permute_activations

    mma, wgmma = (importlib.import_module(f"hlwq_ops.kernels.{name}") for name in ("mma", "wgmma"))  # (the modules)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(64, 256, device=device), 5, 128)
    x = torch.randn(5, 256, device=device)
    module, call = {
        "tc_gemv": (tcgemv, lambda x: tcgemv.tc_gemv(x.bfloat16(), qdata, scale, None, 5, 128, None, torch.float32,
                                                     dict(num_warps=2, KB=1, MG=1, ROWS=16))),
        "wgmma": (wgmma, lambda x: wgmma.wgmma(permute_activations(x, torch.bfloat16), qdata, scale, None, 5, 128,
                                               torch.float32, dict(BM=16, BN=64, SPLIT_K=2, num_warps=4,
                                                                   num_stages=1))),
        "mma": (mma, lambda x: mma.mma(x, qdata, scale, None, 5, 128, None, torch.float32,
                                       dict(BM=16, BN=32, VEC=1, SPLIT_K=2, num_warps=4, num_stages=1))),
        "dequantize_rotated": (dequant, lambda x: dequant.dequantize_rotated(qdata[: x.shape[0] * 8], scale, 5, 128,
                                                                            None, torch.float32)),
    }[wrapper]
    plans = module._launch if wrapper == "dequantize_rotated" else module._plan
    launch_module.clear_plans()
    first = call(x)
    assert torch.equal(call(x), first)
    assert plans.cache_info().currsize == 1 and plans.cache_info().hits == 1
    call(x[:3])
    assert plans.cache_info().currsize == 2
    if wrapper == "mma":  # a row stride is the plan's: rows of 384 read as the contiguous copy's
        wide = torch.zeros(5, 384, device=device)
        wide[:, :256] = x
        assert torch.equal(call(wide[:, :256]), first) and plans.cache_info().currsize == 3
    if wrapper == "dequantize_rotated":  # so is the output's
        out = torch.zeros(40, 288, device=device)
        dequant.dequantize_rotated(qdata[:40], scale, 5, 128, None, torch.float32, out=out[:, :256])
        assert torch.equal(out[:, :256], first) and plans.cache_info().currsize == 3


def _constexpr_names(kernel) -> set[str]:
    fn = getattr(kernel, "fn", kernel)
    return {name for name, p in inspect.signature(fn).parameters.items() if "constexpr" in str(p.annotation)}


def test_every_wrapper_launch_names_every_constexpr(monkeypatch):
    """Each wrapper's Launch gives every constexpr of its kernel's signature (one left to its default would send
    every launch through Triton's binding) and no other: the GEMV, the FWHT, the split-K sum, the tensor-core GEMV,
    the wgmma, general tensor-core and dequantize kernels, and the two warp-specialized kernels where this Triton has
    Gluon. Launches are recorded, not run."""
    from hlwq_ops.kernels import common, dequant, tcgemv, wsmma
    from hlwq_ops.kernels.wgmma import permute_activations

    fwht, mma, wgmma, wsrs = (importlib.import_module(f"hlwq_ops.kernels.{n}") for n in ("fwht", "mma", "wgmma",
                                                                                            "wsrs"))  # (modules)
    made = []
    monkeypatch.setattr(launch_module.Launch, "__call__", lambda self, *args: made.append(self))
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(256, 256), 5, 128)
    x = torch.randn(16, 256)
    gemv(x[:1], qdata, scale, None, 5, 128, None, torch.float32, dict(VEC=1, R=2, ROWS=4, num_warps=2))
    fwht.fwht(x, 128, torch.bfloat16)
    common.reduce_split_k(torch.zeros(2, 16, 256), None, torch.empty(16, 256))
    tcgemv.tc_gemv(x.bfloat16(), qdata, scale, None, 5, 128, None, torch.float32,
                   dict(num_warps=2, KB=1, MG=1, ROWS=16))
    wgmma.wgmma(permute_activations(x, torch.bfloat16), qdata, scale, None, 5, 128, torch.float32,
                dict(BM=16, BN=64, SPLIT_K=2, num_warps=4, num_stages=1))
    mma.mma(x, qdata, scale, None, 5, 128, None, torch.float32,
            dict(BM=16, BN=32, VEC=1, SPLIT_K=1, num_warps=4, num_stages=1))
    dequant.dequantize_rotated(qdata, scale, 5, 128, None, torch.float32)
    kernels = 7
    if wsmma.gluon is not None:
        xb = x.bfloat16()
        wsrs.ws_rs(xb, qdata, scale, None, 5, 128, torch.bfloat16,
                   dict(BM=16, SPLIT_K=1, QSTAGES=4, XSTAGES=2, XBOX=64, REGS=168))
        wsmma.ws_mma(xb, qdata, scale, None, 5, 128, torch.bfloat16,
                     dict(BM=16, SPLIT_K=1, QSTAGES=4, WSTAGES=2, XSTAGES=2, DEC_WARPS=4, DEC_REGS=96, num_warps=4))
        kernels = 9
    assert len({id(launch.kernel) for launch in made}) == kernels
    for launch in made:
        assert set(launch.constexprs) == _constexpr_names(launch.kernel), launch.kernel
