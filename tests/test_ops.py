"""The hlwq ops against the reference math, and torch.library.opcheck on each."""

import pytest
import torch

import hlwq_ops  # noqa: F401  (registers torch.ops.hlwq)
from hlwq_ops import format as fmt
from hlwq_ops.hadamard import hadamard_matrix

from ._utils import ACT_DTYPES, DEVICES, rel_error


def _packed(N, K, bits=5, device="cpu", block_size=128):
    w = torch.randn(N, K, device=device)
    qdata, scale = torch.ops.hlwq.quantize(w, bits, block_size)
    return w, qdata, scale


def _dtype_eps(dtype):
    return torch.finfo(dtype).eps


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ACT_DTYPES)
@pytest.mark.parametrize("block_size", [32, 128, 256])
def test_fwht_matches_matrix(device, dtype, block_size):
    x = torch.randn(3, 7, 2 * block_size, device=device).to(dtype)
    h = hadamard_matrix(block_size, torch.float64, device)
    ref = (x.double().view(3, 7, 2, block_size) @ h).view(x.shape)
    out = torch.ops.hlwq.fwht(x, block_size)
    assert out.dtype == dtype and out.shape == x.shape
    # Error of the result against float64 is what rounding to dtype allows.
    assert rel_error(out, ref) <= 2 * _dtype_eps(dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ACT_DTYPES)
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("K", [128, 200, 384])
def test_linear_matches_dequantized_reference(device, dtype, bits, K):
    w, qdata, scale = _packed(48, K, bits, device)
    x = torch.randn(2, 5, K, device=device).to(dtype)
    bias = torch.randn(48, device=device).to(dtype)
    y = torch.ops.hlwq.linear(x, qdata, scale, bias, bits, 128, K)
    assert y.dtype == dtype and y.shape == (2, 5, 48)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, bits, 128, K, torch.float64)
    ref = x.double() @ w_hat.t() + bias.double()
    # Compare with the error plain torch makes on the same dequantized weight,
    # in the activation dtype or (for 16-bit activations) in bfloat16, whichever
    # is larger: the CUDA tensor-core path multiplies 16-bit models' inputs in
    # tf32, a bfloat16 GEMM's precision.
    low = torch.bfloat16 if dtype != torch.float32 else dtype
    torch_err = max(
        rel_error(torch.nn.functional.linear(x, w_hat.to(dtype), bias), ref),
        rel_error(torch.nn.functional.linear(x.to(low), w_hat.to(low), bias.to(low)), ref),
    )
    assert rel_error(y, ref) <= 2 * torch_err + 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_linear_rotated_is_linear_after_fwht(device):
    _, qdata, scale = _packed(16, 256, 4, device)
    x = torch.randn(3, 256, device=device)
    xr = torch.ops.hlwq.fwht(x, 128)
    torch.testing.assert_close(
        torch.ops.hlwq.linear_rotated(xr, qdata, scale, None, 4, 128),
        torch.ops.hlwq.linear(x, qdata, scale, None, 4, 128, 256),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_op(device, dtype):
    w, qdata, scale = _packed(32, 300, 5, device)
    out = torch.ops.hlwq.dequantize(qdata, scale, 5, 128, 300, dtype)
    assert out.dtype == dtype and out.shape == (32, 300)
    torch.testing.assert_close(out, fmt.dequantize_ref(qdata.cpu(), scale.cpu(), 5, 128, 300, dtype).to(device))


@pytest.mark.parametrize("device", [*DEVICES, "meta"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, torch.uint8])
def test_dequantize_op_refuses_non_float_dtypes(device, dtype):
    """An integer or bool dtype truncated the weight (the fake implementation took it as well)."""
    _, qdata, scale = _packed(32, 300, 5, "cpu")
    with pytest.raises(TypeError, match=f"dtype must be one of .* got {dtype}"):
        torch.ops.hlwq.dequantize(qdata.to(device), scale.to(device), 5, 128, 300, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_op_matches_reference(device):
    w = torch.randn(64, 256, device=device)
    qdata, scale = torch.ops.hlwq.quantize(w, 5, 128)
    ref_q, ref_s = fmt.quantize_ref(w.cpu(), 5, 128)
    # CPU and CUDA may round a handful of boundary cases differently.
    assert (qdata.cpu() != ref_q).float().mean() < 1e-3
    torch.testing.assert_close(scale.cpu(), ref_s, rtol=2e-3, atol=0)


def test_fwht_autograd_is_self_transpose():
    x = torch.randn(4, 256, dtype=torch.float32, requires_grad=True)
    g = torch.randn(4, 256)
    torch.ops.hlwq.fwht(x, 128).backward(g)
    torch.testing.assert_close(x.grad, torch.ops.hlwq.fwht(g, 128))


def test_linear_autograd():
    _, qdata, scale = _packed(24, 200, 5)
    x = torch.randn(3, 200, dtype=torch.float32, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    g = torch.randn(3, 24)
    torch.ops.hlwq.linear(x, qdata, scale, bias, 5, 128, 200).backward(g)
    w_hat = torch.ops.hlwq.dequantize(qdata, scale, 5, 128, 200)
    torch.testing.assert_close(x.grad, g @ w_hat, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad, g.sum(0))


@pytest.mark.parametrize(
    "grad_enabled, x_grad, bias_grad, expected",
    [
        (False, True, True, "linear_inference"),
        (True, False, False, "linear_inference"),
        (True, True, False, "linear"),
        (True, False, True, "linear"),
    ],
)
def test_linear_call_records_autograd_only_where_a_gradient_is_needed(grad_enabled, x_grad, bias_grad, expected):
    """An HLWQ linear that no gradient passes through runs ``hlwq.linear_inference`` (no autograd kernel: cheaper
    through the dispatcher); one that needs a gradient runs ``hlwq.linear``, and its gradients are right."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from hlwq_ops import HLWQTensor

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    w = HLWQTensor.from_hp(torch.randn(24, 200))
    x = torch.randn(3, 200, requires_grad=x_grad)
    bias = torch.randn(24, requires_grad=bias_grad)
    with torch.set_grad_enabled(grad_enabled), Seen() as seen:
        y = torch.nn.functional.linear(x, w, bias)
    hlwq_ops_seen = [str(op) for op in seen.ops if op.namespace == "hlwq"]
    assert hlwq_ops_seen == [f"hlwq.{expected}.default"]
    torch.testing.assert_close(y, x.detach() @ w.dequantize().T + bias.detach(), rtol=1e-4, atol=1e-4)
    assert y.requires_grad == (expected == "linear")
    if expected == "linear":
        g = torch.randn(3, 24)
        y.backward(g)
        if x_grad:
            torch.testing.assert_close(x.grad, g @ w.dequantize(), rtol=1e-4, atol=1e-4)
        if bias_grad:
            torch.testing.assert_close(bias.grad, g.sum(0))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("tangents", ["x", "bias", "both"])
@pytest.mark.parametrize("x_grad", [False, True])
def test_forward_mode_ad_through_an_hlwq_linear(device, tangents, x_grad):
    """``torch.autograd.forward_ad`` and ``torch.func.jvp`` give an HLWQ linear's tangent ``x_t @ W_hat.T + b_t``,
    also where ``x`` requires grad (the ops register a backward only: the tangent was zero through ``jvp``, an error
    through ``forward_ad`` with ``x`` requiring grad)."""
    import torch.autograd.forward_ad as fwad

    from hlwq_ops import HLWQTensor

    w = HLWQTensor.from_hp(torch.randn(24, 200, device=device))
    x, bias = torch.randn(3, 200, device=device), torch.randn(24, device=device)
    x_t = torch.randn_like(x) if tangents != "bias" else torch.zeros_like(x)
    b_t = torch.randn_like(bias) if tangents != "x" else torch.zeros_like(bias)
    expected_y = x @ w.dequantize().T + bias
    expected_t = x_t @ w.dequantize().T + b_t
    x.requires_grad_(x_grad)
    with fwad.dual_level():
        dual_x = fwad.make_dual(x, x_t) if tangents != "bias" else x
        dual_b = fwad.make_dual(bias, b_t) if tangents != "x" else bias
        y, y_t = fwad.unpack_dual(torch.nn.functional.linear(dual_x, w, dual_b))
    assert y_t is not None
    torch.testing.assert_close(y.detach(), expected_y.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y_t, expected_t, rtol=1e-4, atol=1e-4)
    x, expected_y = x.detach(), expected_y.detach()
    y, y_t = torch.func.jvp(lambda x, b: torch.nn.functional.linear(x, w, b), (x, bias), (x_t, b_t))
    torch.testing.assert_close(y, expected_y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y_t, expected_t, rtol=1e-4, atol=1e-4)


# On CUDA a vmapped call runs another kernel family than per-sample calls (more activation rows), in 16 bits on the
# tensor-core paths: relative error bounds instead of the CPU's exact-math tolerance.
_BATCHED_TOL = {"cpu": 1e-5, "cuda": 1e-2}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_forward_and_reverse_jacobians_of_an_hlwq_linear_agree(device):
    """``jacfwd`` (the tangent rule, vmapped) equals ``jacrev`` (the backward) and the dequantized weight."""
    from hlwq_ops import HLWQTensor

    w = HLWQTensor.from_hp(torch.randn(24, 200, device=device))
    f = lambda x: torch.nn.functional.linear(x, w)  # noqa: E731
    x, g = torch.randn(200, device=device), torch.randn(24, device=device)
    assert rel_error(torch.func.jacfwd(f)(x), w.dequantize()) < _BATCHED_TOL[device]
    assert rel_error(torch.func.jacrev(f)(x), w.dequantize()) < _BATCHED_TOL[device]
    assert rel_error(torch.func.grad(lambda x: f(x) @ g)(x), g @ w.dequantize()) < _BATCHED_TOL[device]


def test_functionalize_records_the_inference_op():
    """``torch.func.functionalize`` (no derivative asked) records ``hlwq.linear_inference``, not the forward-mode
    ``autograd.Function``, which it cannot trace."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from hlwq_ops import HLWQTensor

    w = HLWQTensor.from_hp(torch.randn(24, 200))
    gm = make_fx(torch.func.functionalize(lambda x: torch.nn.functional.linear(x, w)))(torch.randn(3, 200))
    assert [str(n.target) for n in gm.graph.nodes if "hlwq" in str(n.target)] == ["hlwq.linear_inference.default"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("op", ["linear", "linear_inference"])
@pytest.mark.parametrize("batched", ["x", "x_dim1", "x_1d", "bias", "x_and_bias", "weight", "codebook"])
def test_vmap_of_the_linear_ops_equals_a_loop(op, batched, device, monkeypatch):
    """``torch.vmap`` over activations, bias, weight or codebook gives each batch element's own call; batched
    activations or bias take one call of the op (functorch's fallback would make one per batch element)."""
    from hlwq_ops import ops
    from hlwq_ops.codebook import codebook as standard_codebook

    calls = []
    check = ops._check_linear  # every call of the op runs it once
    monkeypatch.setattr(ops, "_check_linear", lambda *a: calls.append(1) or check(*a))
    op = getattr(torch.ops.hlwq, op).default
    B, K = 4, 200
    qs = [_packed(24, K, device=device)[1:] for _ in range(B)]
    qdata, scale = qs[0]
    x, bias = torch.randn(B, 3, K, device=device), torch.randn(B, 24, device=device)
    codebooks = standard_codebook(5, torch.device(device))[None] * (1 + 0.1 * torch.arange(B, device=device)[:, None])
    if batched == "x_dim1":
        x = x.transpose(0, 1).contiguous()  # (3, B, K), batched along dim 1
    if batched == "x_1d":
        x = x[:, 0]  # (B, K): one activation vector per batch element
    in_x = {"bias": None, "weight": None, "codebook": None, "x_dim1": 1}.get(batched, 0)
    in_b = 0 if batched in ("bias", "x_and_bias") else None
    in_w = 0 if batched == "weight" else None
    in_c = 0 if batched == "codebook" else None
    xs = x if in_x is not None else x[0]
    bs = bias if in_b is not None else bias[0]
    qdatas = torch.stack([q for q, _ in qs]) if in_w is not None else qdata
    scales = torch.stack([s for _, s in qs]) if in_w is not None else scale
    cs = codebooks if in_c is not None else codebooks[0]
    y = torch.vmap(lambda x, q, s, b, c: op(x, q, s, b, 5, 128, K, c), in_dims=(in_x, in_w, in_w, in_b, in_c))(
        xs, qdatas, scales, bs, cs)
    assert len(calls) == (B if batched in ("weight", "codebook") else 1)
    for i in range(B):
        x_i = xs if in_x is None else xs.select(in_x, i)
        b_i = bs if in_b is None else bs[i]
        q_i, s_i = qs[i] if in_w is not None else (qdata, scale)
        c_i = cs if in_c is None else cs[i]
        assert rel_error(y[i], op(x_i, q_i, s_i, b_i, 5, 128, K, c_i)) < _BATCHED_TOL[device]


def test_vmap_checks_a_batched_bias_and_adds_it_in_16_bits_to_one_rounding():
    """A batched bias gets the op's own checks; in bfloat16 the result differs from the op's by at most one rounding
    of the product before the bias (the rule adds the bias to the op's rounded output) and one of the sum."""
    op = torch.ops.hlwq.linear_inference.default
    _, qdata, scale = _packed(24, 200)
    x = torch.randn(4, 3, 200, dtype=torch.bfloat16)
    batched = torch.vmap(lambda x, b: op(x, qdata, scale, b, 5, 128, 200))
    with pytest.raises(ValueError, match=r"bias must have shape \(24,\)"):
        batched(x, torch.randn(4, 1, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="bias dtype"):
        batched(x, torch.randn(4, 24, dtype=torch.float64))
    bias = torch.randn(4, 24, dtype=torch.bfloat16)
    y = batched(x, bias)
    for i in range(4):
        y_i = op(x[i], qdata, scale, bias[i], 5, 128, 200)
        bound = (y_i.float().abs() + bias[i].float().abs()) * 2**-8 * 2  # |x @ W.T| <= |y| + |bias|, two roundings
        assert ((y[i].float() - y_i.float()).abs() <= bound + 1e-6).all()


# -- opcheck -------------------------------------------------------------------


def _opcheck_cases(device, dtype):
    w, qdata, scale = _packed(40, 200, 5, device)
    x = torch.randn(3, 200, device=device, dtype=dtype, requires_grad=True)
    xr = torch.randn(2, 3, 256, device=device, dtype=dtype, requires_grad=True)
    bias = torch.randn(40, device=device, dtype=dtype, requires_grad=True)
    return {
        "fwht": (torch.ops.hlwq.fwht.default, (torch.randn(5, 256, device=device, dtype=dtype, requires_grad=True), 128)),
        "quantize": (torch.ops.hlwq.quantize.default, (w.to(dtype), 5, 128)),
        "dequantize": (torch.ops.hlwq.dequantize.default, (qdata, scale, 5, 128, 200, dtype)),
        "linear_rotated": (torch.ops.hlwq.linear_rotated.default, (xr, qdata, scale, bias, 5, 128)),
        "linear": (torch.ops.hlwq.linear.default, (x, qdata, scale, bias, 5, 128, 200)),
        "linear_no_bias": (torch.ops.hlwq.linear.default, (x, qdata, scale, None, 5, 128, 200)),
        # no autograd kernel: opcheck's autograd-registration test would refuse inputs that need a gradient
        "linear_inference": (
            torch.ops.hlwq.linear_inference.default,
            (x.detach(), qdata, scale, bias.detach(), 5, 128, 200),
        ),
        "linear_group": (
            torch.ops.hlwq.linear_group.default,
            (x.detach(), [qdata, qdata[:8]], [scale, scale[:8]], [bias.detach(), bias[:8].detach()], 5, 128, 200,
             [None, torch.sort(torch.randn(32, device=device)).values]),
        ),
        "linear_siblings": (
            torch.ops.hlwq.linear_siblings.default,
            (x.detach(), [qdata, qdata[:8]], [scale, scale[:8]], [bias.detach(), None], 5, 128, 200,
             [None, torch.sort(torch.randn(32, device=device)).values]),
        ),
        "linear_glu": (
            torch.ops.hlwq.linear_glu.default,
            (torch.randn(3, 400, device=device, dtype=dtype), qdata, scale, bias.detach(), 5, 128, 200),
        ),
        "linear_group_norm": (
            torch.ops.hlwq.linear_group_norm.default,
            (x.detach(), torch.randn(3, 200, device=device, dtype=dtype), torch.rand(200, device=device, dtype=dtype),
             1e-6, [qdata, qdata[:8]], [scale, scale[:8]], [bias.detach(), bias[:8].detach()], 5, 128, 200,
             [None, None]),
        ),
        "linear_group_norm_unit_offset": (
            torch.ops.hlwq.linear_group_norm.default,
            (x.detach(), torch.randn(3, 200, device=device, dtype=dtype), torch.randn(200, device=device, dtype=dtype),
             1e-6, [qdata, qdata[:8]], [scale, scale[:8]], [None, None], 5, 128, 200, [None, None], True),
        ),
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ACT_DTYPES)
@pytest.mark.parametrize(
    "name",
    ["fwht", "quantize", "dequantize", "linear_rotated", "linear", "linear_no_bias", "linear_inference",
     "linear_group", "linear_siblings", "linear_glu", "linear_group_norm", "linear_group_norm_unit_offset"],
)
def test_opcheck(device, dtype, name):
    op, args = _opcheck_cases(device, dtype)[name]
    tol = {} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 5e-2}
    torch.library.opcheck(op, args, **tol)


# -- linear_group ----------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 5])  # (on CUDA: one GEMV launch at one row; at five, each weight's own call)
def test_linear_group_is_the_linears_side_by_side(device, M):
    _, q1, s1 = _packed(40, 200, 5, device)
    _, q2, s2 = _packed(24, 200, 5, device)
    x = torch.randn(1, M, 200, device=device, dtype=torch.bfloat16)
    b1, b2 = torch.randn(40, device=device), torch.randn(24, device=device)
    y = torch.ops.hlwq.linear_group(x, [q1, q2], [s1, s2], [b1, b2], 5, 128, 200, [None, None])
    expected = torch.cat([torch.ops.hlwq.linear(x, q1, s1, b1, 5, 128, 200),
                          torch.ops.hlwq.linear(x, q2, s2, b2, 5, 128, 200)], -1)
    assert y.shape == (1, M, 64) and y.dtype == torch.bfloat16
    assert rel_error(y, expected) < 1e-2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 5])
def test_linear_siblings_are_the_linears_each(device, M):
    _, q1, s1 = _packed(40, 200, 5, device)
    _, q2, s2 = _packed(24, 200, 5, device)
    x = torch.randn(1, M, 200, device=device, dtype=torch.bfloat16)
    b1 = torch.randn(40, device=device)
    ys = torch.ops.hlwq.linear_siblings(x, [q1, q2], [s1, s2], [b1, None], 5, 128, 200, [None, None])
    expected = [torch.ops.hlwq.linear(x, q1, s1, b1, 5, 128, 200), torch.ops.hlwq.linear(x, q2, s2, None, 5, 128, 200)]
    assert [y.shape for y in ys] == [(1, M, 40), (1, M, 24)] and all(y.dtype == torch.bfloat16 for y in ys)
    assert all(rel_error(y, e) < 1e-2 for y, e in zip(ys, expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 5])  # (CUDA: the GEMV multiplying the halves at one row; at five, the product first)
@pytest.mark.parametrize("dtype", ACT_DTYPES)
def test_linear_glu_is_the_linear_of_silu_times_up(device, M, dtype):
    from hlwq_ops.kernels import silu_and_mul

    _, qdata, scale = _packed(40, 200, 5, device)
    x = 3 * torch.randn(1, M, 400, device=device, dtype=dtype)
    bias = torch.randn(40, device=device)
    y = torch.ops.hlwq.linear_glu(x, qdata, scale, bias, 5, 128, 200)
    assert y.shape == (1, M, 40) and y.dtype == dtype
    expected = torch.ops.hlwq.linear(silu_and_mul(x, 200), qdata, scale, bias, 5, 128, 200)
    if device == "cpu":  # (the CPU implementation is this: the shapes, dtype and checks are what it tests)
        assert torch.equal(y, expected)
    else:  # (the GPU's SiLU against torch's, and the output's rounding, apart: the same sums)
        assert rel_error(y, expected) < max(2 * _dtype_eps(dtype), 1e-5)


def test_linear_glu_refuses_what_is_not_two_halves():
    _, qdata, scale = _packed(8, 256)
    with pytest.raises(ValueError, match=r"x of \(\.\.\., 2 \* K\) = \(\.\.\., 512\), .* got x of shape \(2, 511\)"):
        torch.ops.hlwq.linear_glu(torch.randn(2, 511), qdata, scale, None, 5, 128, 256)
    with pytest.raises(TypeError, match="bias dtype"):
        torch.ops.hlwq.linear_glu(torch.randn(2, 512), qdata, scale, torch.zeros(8, dtype=torch.float64), 5, 128, 256)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 5])  # (CUDA: the GEMV adding and normalizing at one row; at five, the norm first)
@pytest.mark.parametrize("dtype", ACT_DTYPES)
@pytest.mark.parametrize("unit_offset", [False, True])
def test_linear_group_norm_is_the_group_of_the_norm_of_the_sum(device, M, dtype, unit_offset):
    from hlwq_ops.kernels import add_rms_norm

    _, q1, s1 = _packed(40, 200, 5, device)
    _, q2, s2 = _packed(24, 200, 5, device)
    x, residual = (3 * torch.randn(1, M, 200, device=device, dtype=dtype) for _ in range(2))
    weight = (int(not unit_offset) + torch.randn(200, device=device) / 4).to(dtype)
    y, h = torch.ops.hlwq.linear_group_norm(x, residual, weight, 1e-5, [q1, q2], [s1, s2], [None, None], 5, 128, 200,
                                            [None, None], unit_offset)
    normed, expected_h = add_rms_norm(x, residual, weight, 1e-5, unit_offset)
    expected = torch.ops.hlwq.linear_group(normed, [q1, q2], [s1, s2], [None, None], 5, 128, 200, [None, None])
    assert y.shape == (1, M, 64) and y.dtype == dtype and h.shape == x.shape and h.is_contiguous()
    assert torch.equal(h, expected_h)
    if device == "cpu":  # (the CPU implementation is this: the shapes, dtype and checks are what it tests)
        assert torch.equal(y, expected)
    else:  # (the kernel's sum of squares in another order: an element of the norm may round the other way)
        assert rel_error(y, expected) < max(4 * _dtype_eps(dtype), 1e-5)


def test_linear_group_norm_refuses_a_residual_or_weight_unlike_x():
    _, qdata, scale = _packed(8, 256)
    x = torch.randn(2, 256)
    weights = ([qdata], [scale], [None], 5, 128, 256, [None])
    with pytest.raises(ValueError, match=r"residual of x's shape, dtype and device \(\(2, 256\), torch.float32, cpu\); "
                                         r"got \(2, 255\), torch.float32, cpu"):
        torch.ops.hlwq.linear_group_norm(x, torch.randn(2, 255), torch.ones(256), 1e-6, *weights)
    with pytest.raises(ValueError, match=r"got \(2, 256\), torch.bfloat16"):
        torch.ops.hlwq.linear_group_norm(x, x.bfloat16(), torch.ones(256), 1e-6, *weights)
    with pytest.raises(ValueError, match=r"norm weight of shape \(256,\) in x's dtype torch.float32 on cpu; got "
                                         r"\(128,\), torch.float32"):
        torch.ops.hlwq.linear_group_norm(x, x, torch.ones(128), 1e-6, *weights)
    with pytest.raises(ValueError, match=r"got \(256,\), torch.bfloat16"):
        torch.ops.hlwq.linear_group_norm(x, x, torch.ones(256, dtype=torch.bfloat16), 1e-6, *weights)
    with pytest.raises(ValueError, match="eps >= 0, got -1.0"):
        torch.ops.hlwq.linear_group_norm(x, x, torch.ones(256), -1.0, *weights)
    with pytest.raises(ValueError, match="x has K=255, weight expects K=256"):
        torch.ops.hlwq.linear_group_norm(x[:, :255], x[:, :255], torch.ones(256), 1e-6, *weights)


def test_linear_siblings_refuse_lists_of_other_lengths():
    _, qdata, scale = _packed(8, 256)
    x = torch.randn(2, 256)
    with pytest.raises(ValueError, match="hlwq.linear_siblings takes one qdata, .* got lists of 1, 1, 2 and 1"):
        torch.ops.hlwq.linear_siblings(x, [qdata], [scale], [None, None], 5, 128, 256, [None])


def test_linear_group_refuses_lists_of_other_lengths_and_checks_each_weight():
    _, qdata, scale = _packed(8, 256)
    x = torch.randn(2, 256)
    with pytest.raises(ValueError, match="one qdata, scale, bias and codebook .* got lists of 2, 1, 2 and 2"):
        torch.ops.hlwq.linear_group(x, [qdata, qdata], [scale], [None, None], 5, 128, 256, [None, None])
    with pytest.raises(ValueError, match="at least one weight"):
        torch.ops.hlwq.linear_group(x, [], [], [], 5, 128, 256, [])
    with pytest.raises(ValueError, match="x has K=255, weight expects K=256"):
        torch.ops.hlwq.linear_group(x[:, :255], [qdata], [scale], [None], 5, 128, 256, [None])


# -- bad input -----------------------------------------------------------------


def test_linear_k_mismatch():
    _, qdata, scale = _packed(8, 256)
    with pytest.raises(ValueError, match="x has K=255, weight expects K=256"):
        torch.ops.hlwq.linear(torch.randn(2, 255), qdata, scale, None, 5, 128, 256)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.int8])
def test_linear_activation_dtype(dtype):
    _, qdata, scale = _packed(8, 256)
    with pytest.raises(TypeError, match=f"x dtype must be one of .* got {dtype}"):
        torch.ops.hlwq.linear(torch.ones(2, 256, dtype=dtype), qdata, scale, None, 5, 128, 256)


def test_linear_bits_mismatch():
    _, qdata, scale = _packed(8, 256, bits=5)
    with pytest.raises(ValueError, match=r"qdata has shape \(8, 160\), expected \(8, 96\)"):
        torch.ops.hlwq.linear(torch.randn(2, 256), qdata, scale, None, 3, 128, 256)


def test_linear_bad_bias():
    _, qdata, scale = _packed(8, 256)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\), got \(9,\)"):
        torch.ops.hlwq.linear(torch.randn(2, 256), qdata, scale, torch.randn(9), 5, 128, 256)


def test_bias_of_another_dtype_is_refused():
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    with pytest.raises(TypeError, match="bias dtype"):
        torch.ops.hlwq.linear(torch.randn(2, 256), qdata, scale, torch.randn(8, dtype=torch.float64), 5, 128, 256)


def test_linear_of_no_rows():
    qdata, scale = torch.ops.hlwq.quantize(torch.randn(8, 256), 5, 128)
    assert torch.ops.hlwq.linear(torch.randn(0, 256), qdata, scale, None, 5, 128, 256).shape == (0, 8)


def test_fwht_ragged():
    with pytest.raises(ValueError, match="x has last dim 100, expected a multiple of block_size=128"):
        torch.ops.hlwq.fwht(torch.randn(2, 100), 128)


def test_errors_also_raised_by_fake_impls():
    """The fake impls run the same checks: a compiled call fails at trace time with the same message."""
    _, qdata, scale = _packed(8, 256)

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return torch.ops.hlwq.linear(x, qdata, scale, None, 5, 128, 256)

    with pytest.raises(Exception, match="x has K=255, weight expects K=256"):
        f(torch.randn(2, 255))


def test_fwht_fake_strides_match_on_strided_input():
    """Both implementations return a contiguous tensor for a transposed input; so must the fake one."""
    x = torch.randn(256, 6).t()
    torch.library.opcheck(torch.ops.hlwq.fwht.default, (x, 128, None))
    compiled = torch.compile(lambda a: torch.ops.hlwq.fwht(a.t(), 128) * 2, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x.t()), torch.ops.hlwq.fwht(x, 128) * 2)


def test_linear_rotated_float32_output_of_16_bit_input():
    """``out_dtype=float32`` is float32 math, not a result rounded to the input's dtype first (CPU op)."""
    qdata, scale = fmt.quantize_ref(torch.randn(16, 256), 5, 128)
    xr = torch.randn(3, 256).bfloat16()
    y = torch.ops.hlwq.linear_rotated(xr, qdata, scale, None, 5, 128, None, torch.float32)
    ref = xr.double() @ fmt.dequantize_rotated_ref(qdata, scale, 5, 128).double().t()
    assert y.dtype == torch.float32 and rel_error(y, ref) < 1e-6


def test_linear_rotated_backward_in_float32_for_a_float32_input():
    """A float16 output's gradient flows back to a float32 ``xr`` through float32 math (it went through float16:
    a gradient of 30000 overflowed)."""
    qdata, scale = fmt.quantize_ref(torch.randn(64, 128), 5, 128)
    xr = torch.randn(2, 128, requires_grad=True)
    y = torch.ops.hlwq.linear_rotated(xr, qdata, scale, None, 5, 128, None, torch.float16)
    g = torch.full_like(y, 30000.0)
    y.backward(g)
    ref = g.double() @ fmt.dequantize_rotated_ref(qdata, scale, 5, 128).double()
    assert torch.isfinite(xr.grad).all() and rel_error(xr.grad, ref) < 1e-6


def test_bits_and_block_size_as_arguments_of_a_compiled_function():
    """A function calling the op with its bits and block size as arguments, compiled with ``dynamic=True`` (or
    called with a second width, which torch makes symbolic): the checks refused the symbolic ints ("bits must be an
    integer in 2..8, got s45"); they are specialized now, a graph for each."""
    torch._dynamo.reset()
    w, x = torch.randn(5, 200), torch.randn(2, 200)
    project = torch.compile(lambda x, q, s, bits, block: torch.ops.hlwq.linear(x, q, s, None, bits, block, 200),
                            backend="aot_eager", fullgraph=True, dynamic=True)
    for bits, block in ((5, 128), (3, 128), (4, 64)):
        q, s = torch.ops.hlwq.quantize(w, bits, block)
        expected = torch.ops.hlwq.linear(x, q, s, None, bits, block, 200)
        torch.testing.assert_close(project(x, q, s, bits, block), expected)
