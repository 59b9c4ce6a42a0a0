"""HLWQTensor: a torchao-style tensor subclass holding an HLWQ-quantized weight."""

from __future__ import annotations

import hashlib
import itertools
import sys
import warnings

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import return_and_correct_aliasing
from torchao.utils import TorchAOBaseTensor, fill_defaults

from . import format as fmt
from . import kernels, ops
from .hadamard import check_block_size

__all__ = ["HLWQTensor"]

aten = torch.ops.aten


class HLWQTensor(TorchAOBaseTensor):
    """A linear weight of logical shape (N, K) stored in the HLWQ format.

    Tensor data:
        qdata: (N, n_blocks * block_size * bits / 8) uint8, bit-packed codes in
            the layout documented in :mod:`hlwq_ops.format`.
        scale: (N, n_blocks) float16 block scales.
        codebook (optional): (2**bits,) float32 centroids; None means the
            Lloyd-Max codebook of N(0, 1) for ``bits`` (checkpoints imported from
            other engines may carry their own).

    Attributes:
        bits: code width, 2..8.
        block_size: weights per block along K (a power of two, 128 by default).
        shape: the logical shape, (N, K), or (K, N) when ``transposed``.
        dtype: the dtype of ``dequantize()`` (the original weight's dtype).
        transposed: True after ``.t()``; ``mm``/``addmm`` with a transposed
            weight are linears.

    ``F.linear(x, w)`` runs ``torch.ops.hlwq.linear``, or ``hlwq.linear_inference`` where
    no gradient is recorded (a plain eager CUDA call: their implementation directly;
    :func:`hlwq_ops.ops.linear_call`), and returns ``x.dtype``.
    """

    tensor_data_names = ["qdata", "scale"]
    tensor_attribute_names = ["bits", "block_size", "shape", "dtype"]
    optional_tensor_data_names = ["codebook"]
    optional_tensor_attribute_names = ["transposed"]

    def __new__(
        cls,
        qdata: torch.Tensor,
        scale: torch.Tensor,
        bits: int,
        block_size: int,
        shape,
        dtype: torch.dtype,
        codebook: torch.Tensor | None = None,
        transposed: bool = False,
    ):
        return torch.Tensor._make_wrapper_subclass(
            cls, tuple(shape), dtype=dtype, device=qdata.device, requires_grad=False
        )

    def __init__(
        self,
        qdata: torch.Tensor,
        scale: torch.Tensor,
        bits: int,
        block_size: int,
        shape,
        dtype: torch.dtype,
        codebook: torch.Tensor | None = None,
        transposed: bool = False,
    ):
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"HLWQTensor shape must be 2-D, got {tuple(shape)}")
        if dtype not in fmt.ACTIVATION_DTYPES:  # the linear's input and output dtype: what the kernels take
            raise TypeError(f"HLWQTensor dtype (its linear's activations) must be one of {fmt.ACTIVATION_DTYPES}, "
                            f"got {dtype}")
        K = shape[0] if transposed else shape[1]
        N = fmt.check_packed(qdata, scale, bits, block_size, K, codebook)
        expected_n = shape[1] if transposed else shape[0]
        if N != expected_n:
            raise ValueError(f"qdata has {N} rows, shape {tuple(shape)} expects {expected_n}")
        self.qdata = qdata
        self.scale = scale
        self.bits = bits
        self.block_size = block_size
        self.codebook = codebook
        self.transposed = transposed
        self._remember_outer(shape, dtype)
        self._mark_static()
        kernels.note_weight(qdata, scale, bits, block_size)  # device buffers now; same-shape layers tune together

    def _mark_static(self) -> None:
        """Tell torch.compile that this weight's sizes, and its packed tensors', never vary (``mark_static``).

        A weight's shape picks its kernels and its tuned configs, so a symbolic one gains nothing. And without the
        marks, a sliced weight passed as an argument to a function compiled with ``dynamic=True`` failed to compile:
        Dynamo rebuilds a view of a tensor subclass by replaying its slice with symbols that must not be guarded on,
        and the slice's block-boundary checks guard on them (torch 2.13: an IndexError in the shape guards, or
        Inductor's "expected [s13] to have been codegen-ed"). A module's parameters were static already. The marks
        are attributes of the tensors themselves: packed tensors or a codebook given to the constructor are marked
        (``from_hp`` copies a codebook it is given).
        """
        if torch.compiler.is_compiling():  # (a weight made inside a traced graph: its inputs carry the marks)
            return
        torch._dynamo.mark_static(self)  # (also marks qdata and scale, of the same rank)
        if self.codebook is not None:
            torch._dynamo.mark_static(self.codebook)

    def _remember_outer(self, shape, dtype: torch.dtype) -> None:
        """Keep shape and strides, and the flattening, as plain attributes for :meth:`size`, :meth:`stride` and
        :meth:`__tensor_flatten__` (``self.shape`` of a subclass runs ``__torch_function__`` in Python)."""
        with torch._C.DisableTorchFunctionSubclass():
            stride = torch._C.TensorBase.stride(self)
        self._outer = (torch.Size(shape), stride)
        names = ["qdata", "scale"] if self.codebook is None else ["qdata", "scale", "codebook"]
        attrs = {"bits": self.bits, "block_size": self.block_size, "shape": self._outer[0], "dtype": dtype,
                 "transposed": self.transposed}
        self._flat = (names, attrs)

    def size(self, dim: int | None = None):
        """``Tensor.size``, read from the stored shape.

        On a subclass, ``Tensor.size`` is a ``__torch_function__`` round trip in
        Python (~2 us). AOTAutograd's runtime wrapper on torch 2.11 calls
        ``size()`` and ``stride()`` on every HLWQ parameter on every call of a
        compiled model: 224 each per decode step of an 8B model run by
        ``generate()`` (``benchmarks/profile_compiled_host.py``).
        """
        shape = self._outer[0]
        return shape if dim is None else shape[dim]

    def stride(self, dim: int | None = None):
        """``Tensor.stride``, read from the stored strides (see :meth:`size`)."""
        stride = self._outer[1]
        return stride if dim is None else stride[dim]

    def __tensor_flatten__(self):
        """torchao's flattening, made once (read-only: callers must not change it).

        Dynamo's guards flatten every HLWQ parameter twice on every call of a
        compiled model, AOTAutograd's runtime wrapper on torch 2.11 once more:
        224 parameters per decode step of an 8B model
        (``benchmarks/profile_compiled_host.py``). torchao's generic flattening
        loops over attributes and reads ``shape`` and ``dtype`` through
        ``__torch_function__``.
        """
        return self._flat

    # -- construction --------------------------------------------------------

    @classmethod
    def from_hp(
        cls,
        hp_tensor: torch.Tensor,
        bits: int = 5,
        block_size: int = 128,
        codebook: torch.Tensor | None = None,
        scale_mode: str = "search",
    ) -> "HLWQTensor":
        """Quantize a high-precision (N, K) weight.

        Args:
            hp_tensor: (N, K) float16, bfloat16 or float32: the linear's dtype (the kernels take no float64
                activations; ``torch.ops.hlwq.quantize`` packs a float64 weight).
            bits: code width, 2..8.
            block_size: a power of two in 32..1024.
            codebook: optional (2**bits,) float32 centroids (copied: the tensor gets its own).
            scale_mode: "search", "lsq" or "norm" (see :mod:`hlwq_ops.format`).
        """
        # The arguments checked here, before the op's schema would reject a wrong type with a dispatcher error,
        # and the dtype against what an HLWQ linear runs in (the op also packs float64 weights).
        fmt.check_bits(bits)
        check_block_size(block_size)
        fmt.check_scale_mode(scale_mode)
        if isinstance(hp_tensor, torch.Tensor) and hp_tensor.dtype not in fmt.ACTIVATION_DTYPES:
            raise TypeError(f"HLWQTensor.from_hp takes a weight of {fmt.ACTIVATION_DTYPES} (its linear's dtype), "
                            f"got {hp_tensor.dtype}; convert it first, e.g. weight.float()")
        fmt.check_weight(hp_tensor)
        qdata, scale = torch.ops.hlwq.quantize(hp_tensor.detach(), bits, block_size, codebook, scale_mode)
        if codebook is not None:  # its own copy: copy_ writes a checkpoint's codebook into it in place
            codebook = codebook.detach().clone()
        return cls(qdata, scale, bits, block_size, hp_tensor.shape, hp_tensor.dtype, codebook)

    # -- properties ----------------------------------------------------------

    @property
    def in_features(self) -> int:
        shape = self._outer[0]  # (not self.shape: a __torch_function__ round trip, ~2-4 us on every eager linear)
        return shape[0] if self.transposed else shape[1]

    @property
    def out_features(self) -> int:
        shape = self._outer[0]
        return shape[1] if self.transposed else shape[0]

    def dequantize(self, output_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The reconstructed weight, of this tensor's shape, in ``output_dtype`` (default ``self.dtype``)."""
        w = torch.ops.hlwq.dequantize(
            self.qdata,
            self.scale,
            self.bits,
            self.block_size,
            self.in_features,
            output_dtype or self.dtype,
            self.codebook,
        )
        return w.t() if self.transposed else w

    def _quantization_type(self) -> str:
        return f"bits={self.bits}, block_size={self.block_size}, shape={tuple(self.shape)}, device={self.device}"

    def __repr__(self) -> str:
        extra = ", transposed=True" if self.transposed else ""
        custom = ", codebook=custom" if self.codebook is not None else ""
        return (
            f"HLWQTensor(shape={tuple(self.shape)}, bits={self.bits}, block_size={self.block_size}, "
            f"dtype={self.dtype}, device={self.device}{custom}{extra})"
        )

    def _stable_hash_for_caching(self) -> str:
        """This input's part of the AOT autograd cache's key (the data is not part of a graph's key): the format
        and each inner tensor's layout. A cached graph asserts its inner inputs' strides, so a weight sliced along
        K (its qdata a strided view) must not share an entry with a whole weight of the same shape; the compiled
        GEMV's route also depends on qdata's alignment."""
        inner = tuple(
            (tuple(t.shape), tuple(t.stride()), str(t.dtype), _alignment(t))
            for t in (self.qdata, self.scale, self.codebook)
            if t is not None
        )
        meta = (
            tuple(self.shape),
            self.bits,
            self.block_size,
            str(self.dtype),
            self.transposed,
            self.codebook is None,
            self.device.type,
            inner,
        )
        return hashlib.blake2b(repr(meta).encode(), digest_size=16).hexdigest()

    def _with(self, **changes) -> "HLWQTensor":
        fields = {
            "qdata": self.qdata,
            "scale": self.scale,
            "bits": self.bits,
            "block_size": self.block_size,
            "shape": self.shape,
            "dtype": self.dtype,
            "codebook": self.codebook,
            "transposed": self.transposed,
        }
        fields.update(changes)
        return HLWQTensor(**fields)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        """torchao's dispatch by table; an op outside it fails saying what is implemented and what to use (an
        error inside an implemented op goes on as it is)."""
        try:
            return super().__torch_dispatch__(func, types, args, kwargs)
        except NotImplementedError as error:
            if func in cls._ATEN_OP_TABLE.get(cls, {}):
                raise
            raise NotImplementedError(
                f"{error}. An HLWQTensor implements linear products with it as the weight (F.linear, x @ w.t(), "
                "mm, addmm, matmul), transposes and views, slices, cat, copies, and moves between devices and "
                "logical dtypes; for anything else take w.dequantize(), a dense tensor."
            ) from None


def _alignment(t: torch.Tensor):
    """The storage offset modulo 16 elements; a symbolic offset (not seen so far: inner tensors stay static under
    ``dynamic=True``) by its expression."""
    offset = t.storage_offset()
    return offset % 16 if isinstance(offset, int) else repr(offset)


HLWQTensor.__module__ = "hlwq_ops"
_torchao_setstate = HLWQTensor.__setstate__  # torchao's, set on subclassing: defaults for missing optional fields


def _setstate(self: HLWQTensor, state) -> None:
    """Unpickling (``torch.load``) skips ``__init__``: get the device ready here too."""
    _torchao_setstate(self, state)
    with torch._C.DisableTorchFunctionSubclass():
        self._remember_outer(self.shape, self.dtype)
    kernels.note_weight(self.qdata, self.scale, self.bits, self.block_size)


HLWQTensor.__setstate__ = _setstate
implements = HLWQTensor.implements
implements_torch_function = HLWQTensor.implements_torch_function


# -- linear ------------------------------------------------------------------


def _floating(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """``torch.autocast``'s dtype where it is on for ``x``'s device, else None. (The first test is the cheap one an
    eager call without autocast stops at; the meta device has no autocast state to ask for.)"""
    if not torch._C._is_any_autocast_enabled():
        return None
    device = x.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _warn_if_weight_wants_grad(weight: HLWQTensor) -> None:
    """An HLWQ weight has no gradient (its codes are not differentiable; the op's backward gives the input's and
    the bias's only), yet ``nn.Parameter`` and transformers' loading set ``requires_grad=True``: say so where
    autograd records the linear, rather than leave ``weight.grad`` silently None. (Read with the subclass's
    ``__torch_function__`` off: through it ``requires_grad`` costs 1.7-3.2 us on a CPU, against 0.3-0.6.)"""
    if not torch.is_grad_enabled():
        return
    with torch._C.DisableTorchFunctionSubclass():
        wants_grad = weight.requires_grad
    if wants_grad:
        warnings.warn(
            "an HLWQTensor weight has requires_grad=True, but quantized weights get no gradient: its .grad stays "
            "None (the input and the bias get theirs). Freeze it with weight.requires_grad_(False), or run "
            "inference under torch.no_grad() or torch.inference_mode().",
            UserWarning,
            stacklevel=_callers_level(),
        )


# What an HLWQ linear runs inside of; the warning goes to the first frame outside (kernels: the Hub's package,
# whose layers transformers 5.25 runs some forwards through).
_LIBRARIES = frozenset({"hlwq_ops", "torch", "torchao", "transformers", "kernels"})


def _callers_level() -> int:
    """``warnings.warn``'s stacklevel of the first frame outside this library and those it runs in (the user's
    ``model(x)``), so that Python shows the warning once for each place in the user's code. (Python 3.12's
    ``skip_file_prefixes`` does this; 3.11 has none.)"""
    frame, level = sys._getframe(2), 2  # (level 1 is the frame that calls warnings.warn, frame 1 here)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARIES:
        frame, level = frame.f_back, level + 1
    return level


def _linear(x: torch.Tensor, weight: HLWQTensor, bias: torch.Tensor | None) -> torch.Tensor:
    if weight.transposed:
        raise ValueError("F.linear expects an (out_features, in_features) weight, got a transposed HLWQTensor")
    _warn_if_weight_wants_grad(weight)
    dtype = _autocast_dtype(x)
    if dtype is not None and _floating(x):  # (autocast casts no integer or float64 operand)
        # As nn.Linear computes under autocast: x and the bias in its dtype. The subclass takes F.linear before
        # autocast's dispatch key would cast them, and the implementation runs with it off: its float32 steps (the
        # reference's rotation, the fallback's dequantized product) are not to be lowered.
        x, bias = x.to(dtype), (bias.to(dtype) if _floating(bias) else bias)
        with torch.autocast(x.device.type, enabled=False):
            return _linear_call(x, weight, bias)
    return _linear_call(x, weight, bias)


def _linear_call(x: torch.Tensor, weight: HLWQTensor, bias: torch.Tensor | None) -> torch.Tensor:
    return ops.linear_call(
        x, weight.qdata, weight.scale, bias, weight.bits, weight.block_size, weight.in_features, weight.codebook
    )


@implements_torch_function(F.linear)
@implements(aten.linear.default)
def _(func, types, args, kwargs):
    if kwargs or len(args) < 2:  # by name, as F.linear / aten.linear take them
        given = list(args) + [None] * (3 - len(args))
        x, weight, bias = (kwargs.get(name, value) for name, value in zip(("input", "weight", "bias"), given))
    else:  # (every eager linear of a model: by position, no keywords)
        x, weight, bias = args if len(args) == 3 else (*args, None)
    if not isinstance(weight, HLWQTensor):
        raise TypeError(f"expected the weight to be an HLWQTensor, got {type(weight).__name__} for the input")
    return _linear(x, weight, bias)


def _linear_weight(w) -> HLWQTensor | None:
    """The (out, in) weight of ``x @ w``, when ``w`` is an HLWQ linear weight's ``.t()``; else None."""
    if isinstance(w, HLWQTensor) and w.transposed:
        return w._with(transposed=False, shape=(w.shape[1], w.shape[0]))
    return None


def _dense(t, like: torch.Tensor):
    """``t`` itself, or dequantized to ``like``'s dtype when it is an HLWQTensor (the dense fallback)."""
    if not isinstance(t, HLWQTensor):
        return t
    return t.dequantize(like.dtype if isinstance(like, torch.Tensor) and like.is_floating_point() else None)


@implements(aten.mm.default)
def _(func, types, args, kwargs):
    """``x @ w.t()`` is the linear. Any other product -- ``g @ w``, which the backward of ``x @ w.t()`` asks
    for, or an HLWQ left operand -- is computed on the dequantized weight."""
    x, w = args
    weight = None if isinstance(x, HLWQTensor) else _linear_weight(w)
    if weight is not None:
        return _linear(x, weight, None)
    return func(_dense(x, w), _dense(w, x))


@implements(aten.addmm.default)
def _(func, types, args, kwargs):
    bias, x, w = args[:3]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    weight = None if isinstance(x, HLWQTensor) else _linear_weight(w)
    if weight is not None and beta == 1 and alpha == 1 and getattr(bias, "shape", None) == (weight.out_features,):
        return _linear(x, weight, bias)
    return func(_dense(bias, x), _dense(x, w), _dense(w, x), beta=beta, alpha=alpha)


@implements_torch_function([torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__])
def _(func, types, args, kwargs):
    """``x @ w.t()`` of any x as the linear (with its own backward); any other product on the dequantized
    weight. Left to torch, a non-contiguous 3-D x would be expanded and multiplied batch by batch, which an
    HLWQTensor does not do."""
    operands = [*args, *(kwargs[k] for k in ("input", "other") if k in kwargs)]  # (by position or by name)
    if "out" in kwargs or len(operands) != 2:
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)
    x, w = operands
    weight = None if isinstance(x, HLWQTensor) else _linear_weight(w)
    if weight is not None:
        return _linear(x, weight, None)
    with torch._C.DisableTorchFunctionSubclass():
        return func(_dense(x, w), _dense(w, x))


# -- views -------------------------------------------------------------------


def _dim(d: int) -> int:
    """A dimension of a 2-D tensor, 0 or 1 (-2 and -1 counted from the end)."""
    if not -2 <= d < 2:
        raise IndexError(f"Dimension out of range (expected to be in range of [-2, 1], but got {d})")
    return d % 2


@implements(aten.t.default)
def _(func, types, args, kwargs):
    w = args[0]
    out = w._with(transposed=not w.transposed, shape=(w.shape[1], w.shape[0]))
    return return_and_correct_aliasing(func, args, kwargs, out)


@implements(aten.transpose.int)
def _(func, types, args, kwargs):
    w, dim0, dim1 = args
    if {_dim(dim0), _dim(dim1)} == {0, 1}:
        out = w._with(transposed=not w.transposed, shape=(w.shape[1], w.shape[0]))
    else:  # the same dimension twice: a view that changes nothing (a new wrapper, as views must be)
        out = w._with()
    return return_and_correct_aliasing(func, args, kwargs, out)


@implements(aten.permute.default)
def _(func, types, args, kwargs):
    w, dims = args
    order = [_dim(d) for d in dims]
    if sorted(order) != [0, 1]:
        raise ValueError(f"an HLWQTensor is 2-D: permute takes an order of (0, 1), got {tuple(dims)}")
    out = w._with(transposed=not w.transposed, shape=(w.shape[1], w.shape[0])) if order == [1, 0] else w._with()
    return return_and_correct_aliasing(func, args, kwargs, out)


@implements(aten.view.default)
def _(func, types, args, kwargs):
    w, size = args
    if tuple(size) not in (tuple(w.shape), (-1, w.shape[1]), (w.shape[0], -1)):
        raise ValueError(f"an HLWQTensor of shape {tuple(w.shape)} cannot be viewed as {tuple(size)}")
    return return_and_correct_aliasing(func, args, kwargs, w._with())


@implements(aten.slice.Tensor)
def _(func, types, args, kwargs):
    """Slice along N (any rows) or along K (at block boundaries), step 1."""
    w, dim, start, end, step = fill_defaults(args, 5, [0, None, None, 1])
    if step != 1:
        raise ValueError(f"HLWQTensor slicing needs step 1, got {step}")
    dim = _dim(dim)
    size = w.shape[dim]
    start = 0 if start is None else max(0, min(size, start + size if start < 0 else start))
    end = size if end is None else max(start, min(size, end + size if end < 0 else end))
    return return_and_correct_aliasing(func, args, kwargs, _slice(w, dim, start, end))


@implements([aten.split.Tensor, aten.split_with_sizes.default])
def _(func, types, args, kwargs):
    """``split`` and ``chunk`` (which splits): slices along N, or along K at block boundaries."""
    w, sizes, dim = fill_defaults(args, 3, [0])
    dim = _dim(dim)
    total = w.shape[dim]
    if func is aten.split.Tensor:  # (one size: pieces of it, the last one shorter)
        if sizes <= 0 and total:
            raise ValueError(f"split_size must be positive for an HLWQTensor's dim {dim} of size {total}, got {sizes}")
        sizes = [min(sizes, total - start) for start in range(0, total, sizes)] if total else [0]
    elif sum(sizes) != total or any(n < 0 for n in sizes):
        raise ValueError(f"split_with_sizes expects sizes >= 0 that sum to dim {dim}'s size {total}, got {list(sizes)}")
    pieces = [_slice(w, dim, start, start + n) for start, n in zip(itertools.accumulate(sizes, initial=0), sizes)]
    return return_and_correct_aliasing(func, args, kwargs, pieces)


def _slice(w: HLWQTensor, dim: int, start: int, end: int) -> HLWQTensor:
    """``w``'s rows or columns ``start:end`` of ``dim`` (0 <= start <= end <= its size), sharing its memory."""
    size = w.shape[dim]
    along_k = (dim == 0) == w.transposed
    if not along_k:
        qdata, scale = w.qdata[start:end], w.scale[start:end]
    else:
        B = w.block_size
        if start == end:
            raise ValueError(f"an HLWQTensor cannot be sliced to no in_features: [{start}:{end}] of K={size} is "
                             "empty (use w.dequantize() for an empty dense slice)")
        if start % B or (end % B and end != size):
            raise ValueError(
                f"slicing K of an HLWQTensor must start and end on a block boundary "
                f"(multiples of block_size={B}, or the end), got [{start}:{end}]"
            )
        per_block = fmt.block_bytes(w.bits, B)
        b0, b1 = start // B, -(-end // B)
        qdata = w.qdata[:, b0 * per_block : b1 * per_block]
        scale = w.scale[:, b0:b1]
    shape = list(w.shape)
    shape[dim] = end - start
    return w._with(qdata=qdata, scale=scale, shape=tuple(shape))


@implements(aten.cat.default)
def _(func, types, args, kwargs):
    """Concatenate along N (e.g. fuse q/k/v): same bits, block size, K and codebook."""
    tensors, dim = fill_defaults(args, 2, [0])
    others = sorted({type(t).__name__ for t in tensors if not isinstance(t, HLWQTensor)})
    if others:
        raise TypeError(f"torch.cat joins HLWQTensors only with HLWQTensors, got {others} too; "
                        "dequantize() them all to join dense tensors")
    first = tensors[0]
    n_dim = 1 if first.transposed else 0
    if _dim(dim) != n_dim:
        raise ValueError("HLWQTensors concatenate along out_features only")
    for t in tensors[1:]:
        if (t.bits, t.block_size, t.in_features, t.transposed) != (
            first.bits,
            first.block_size,
            first.in_features,
            first.transposed,
        ):
            raise ValueError("cat needs HLWQTensors with the same bits, block_size, in_features and transposition")
        if (t.codebook is None) != (first.codebook is None) or (
            t.codebook is not None and not torch.equal(t.codebook, first.codebook)
        ):
            raise ValueError("cat needs HLWQTensors with the same codebook")
    qdata = torch.cat([t.qdata for t in tensors])
    scale = torch.cat([t.scale for t in tensors])
    shape = list(first.shape)
    shape[n_dim] = sum(t.shape[n_dim] for t in tensors)
    codebook = None if first.codebook is None else first.codebook.clone()  # a new tensor shares nothing
    return first._with(qdata=qdata, scale=scale, codebook=codebook, shape=tuple(shape))


# -- copies and moves ----------------------------------------------------------


@implements_torch_function(torch.Tensor.data.__set__)
def _(func, types, args, kwargs):
    """``param.data = new``: the wrapper takes ``new``'s size and dtype, so its packed data must come too.

    torch swaps only the wrapper's metadata; the packed tensors and attributes live in Python fields, which
    would keep the old weight (a silently wrong linear). A plain ``new`` cannot be held: quantize it first.
    """
    dst, src = args
    if not isinstance(src, HLWQTensor):
        raise TypeError(
            f"cannot set .data of an HLWQTensor to a {type(src).__name__}; "
            "assign an HLWQTensor (HLWQTensor.from_hp(weight)) or replace the parameter"
        )
    with torch._C.DisableTorchFunctionSubclass():
        func(dst, src)
    for name in ("qdata", "scale", "codebook", "bits", "block_size", "transposed", "_outer", "_flat"):
        setattr(dst, name, getattr(src, name))


def _check_logical_dtype(dtype: torch.dtype | None) -> None:
    if dtype is not None and dtype not in fmt.ACTIVATION_DTYPES:
        raise TypeError(f"an HLWQTensor's dtype (its linear's activations) can be {fmt.ACTIVATION_DTYPES}, "
                        f"got {dtype}")


@implements(aten._to_copy.default)
def _(func, types, args, kwargs):
    """Move the data (device) and/or change the logical dtype (what dequantize / linear produce)."""
    w = args[0]
    device = kwargs.get("device")
    dtype = kwargs.get("dtype")
    non_blocking = kwargs.get("non_blocking", False)
    _check_logical_dtype(dtype)

    def move(t):  # a copy even on the same device: the result shares no data with ``w``, as _to_copy promises
        return None if t is None else t.to(device=device, non_blocking=non_blocking, copy=True)

    out = w._with(qdata=move(w.qdata), scale=move(w.scale), codebook=move(w.codebook), dtype=dtype or w.dtype)
    return return_and_correct_aliasing(func, args, kwargs, out)


@implements(aten.empty_like.default)
def _(func, types, args, kwargs):
    """The same format with uninitialized codes, scales and codebook, on ``device`` if given: what
    ``Module.to_empty`` makes of a model quantized on the meta device before its checkpoint is loaded into it."""
    w = args[0]
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    _check_logical_dtype(dtype)

    def empty(t):
        return None if t is None else torch.empty_like(t, device=device)

    return w._with(qdata=empty(w.qdata), scale=empty(w.scale), codebook=empty(w.codebook), dtype=dtype or w.dtype)


def _check_owns_its_codebook(dst: HLWQTensor) -> None:
    """A codebook is written in place (a captured graph keeps reading it); into a part of a weight -- a slice
    shares its codebook with the whole -- another codebook would change how the rest decodes."""
    q = dst.qdata
    if q.storage_offset() or q.untyped_storage().nbytes() != q.numel() * q.element_size():
        raise ValueError(
            "cannot copy a weight with another codebook into a part of an HLWQTensor (a slice or view): the whole "
            "weight shares one codebook; copy into the whole weight, or use the same codebook"
        )


def _metadata(t: HLWQTensor) -> dict:
    return {
        "shape": tuple(t.shape),
        "bits": t.bits,
        "block_size": t.block_size,
        "transposed": t.transposed,
        "codebook": "standard" if t.codebook is None else "custom",
    }


@implements(aten.copy_.default)
def _(func, types, args, kwargs):
    dst, src = args[:2]
    if isinstance(dst, HLWQTensor):
        if not isinstance(src, HLWQTensor):
            raise TypeError(
                f"cannot copy a {type(src).__name__} into an HLWQTensor; quantize it with HLWQTensor.from_hp first"
            )
        mine, theirs = _metadata(dst), _metadata(src)
        if mine != theirs:
            diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
            raise ValueError(
                "HLWQ checkpoint does not match the model: "
                + ", ".join(f"{k} is {a} in the checkpoint, {b} in the model" for k, (a, b) in diff.items())
            )
        real = not (dst.qdata.is_meta or src.qdata.is_meta)  # (into or from meta: nothing is copied)
        if real and dst.codebook is not None and not torch.equal(dst.codebook, src.codebook.to(dst.codebook.device)):
            _check_owns_its_codebook(dst)
            dst.codebook.copy_(src.codebook)
        dst.qdata.copy_(src.qdata)
        dst.scale.copy_(src.scale)
        return dst
    # A plain destination receives the dequantized weight.
    return dst.copy_(src.dequantize(dst.dtype))


torch.serialization.add_safe_globals([HLWQTensor])
