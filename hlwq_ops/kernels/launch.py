"""Launching a compiled Triton kernel again without Triton's per-call binding.

``kernel[grid](*args, **constexprs)`` runs ``JITFunction.run`` on every call:
it binds the kernel's arguments (about forty here), computes their
specialization and a cache key, looks the compiled kernel up and only then
calls its launcher. On the H200 machine's CPU a launch took 34-46 us that
way against 15-18 us for the launcher alone (``benchmarks/RESULTS.md``
34a-b) -- host time every eager call pays, a 32-layer prefill 448-641
times a forward. Launched directly, the eager Q5 prefill of the Llama-3-8B
shape took 113.8 ms of wall time against 135.8 (34b).

A :class:`Launch` is one kernel's launch with everything but its tensor
arguments fixed -- the grid, the integer arguments (all after the tensors in
our kernels' signatures), the constexprs and the launch options: what a kernel
wrapper resolves once per call signature (its plan, cached by the wrapper) and
launches on every call. It keeps the compiled kernel under the tensors'
specialization -- each tensor's dtype and 16-byte alignment, each TMA
descriptor's (:class:`Tma`) dtype, block, rank and layout -- plus the device
and Triton's ``debug`` and ``instrumentation_mode`` knobs; the integers and
constexprs are the object's own. The first launch of a key goes through Triton
(compiling if needed), later ones call the compiled kernel's C launcher
directly (:class:`DirectLaunch`), without Triton's Python launcher around it: that
one allocates scratch buffers our kernels do not have and turns every TMA
descriptor into a ``CUtensorMap`` on every launch, which the direct launch does
once per (descriptor argument, data pointer, shape, strides). On the H200
machine that took the eager Q5 prefill of the Llama-3-8B shape from 54.5 to
45.8 ms (medians, one process, ``benchmarks/RESULTS.md`` 36). The key is finer
than Triton's own (never coarser), so a kernel is never reused for arguments
Triton would have compiled another one for. Not repeated after the first
launch: Triton's check that the globals a kernel read have not changed (ours
are constants).

The direct call is taken only with the Triton versions it was checked with
on a GPU (:data:`CHECKED`: the C launcher's arguments and the descriptor
wrapper's closure are Triton 3.6's), without launch or pre-run hooks (a profiler's hooks
see every launch through Triton), and never in the interpreter (``TRITON_INTERPRET=1``
makes kernels of another class than ``JITFunction``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
from triton.runtime.jit import JITFunction

__all__ = ["CHECKED", "DirectLaunch", "Launch", "Tma", "cdiv", "clear_plans", "clear_with_plans", "config_key",
           "config_of", "direct", "plan_cache"]

# Triton versions whose C launcher (its argument format, the descriptor wrapper's closure) this was checked against
# on a GPU.
CHECKED = ("3.6.",)
_DIRECT = triton.__version__.startswith(CHECKED)


_PLAN_CACHES: list = []


def plan_cache(fn):
    """``functools.lru_cache(maxsize=1024)`` for a wrapper's plan function (a call signature's launch, resolved once),
    emptied with the others by :func:`clear_plans`."""
    cached = functools.lru_cache(maxsize=1024)(fn)
    _PLAN_CACHES.append(cached)
    return cached


def clear_with_plans(store: dict) -> dict:
    """Have :func:`clear_plans` empty ``store`` too: a dict of calls resolved once that holds plans."""
    _PLAN_CACHES.append(store)
    return store


def clear_plans() -> None:
    """Forget every plan (and so every compiled kernel a :class:`Launch` kept): for tests that swap a kernel."""
    for cached in _PLAN_CACHES:
        cached.clear() if isinstance(cached, dict) else cached.cache_clear()


def config_key(config: dict) -> tuple:
    """A tuning config as part of a plan's key: each value with its type, so that ``True`` and ``1`` (or ``64`` and
    ``64.0``), equal as keys, do not share a plan that was checked for only one of them."""
    return tuple((name, type(value), value) for name, value in config.items())


def config_of(key: tuple) -> dict:
    """The config a :func:`config_key` was made from."""
    return {name: value for name, _, value in key}


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for host code (``triton.cdiv`` is a constexpr function: several us a call on the host)."""
    return -(-a // b)


class Tma(NamedTuple):
    """A TMA descriptor argument of a :class:`Launch`: the descriptor Gluon's host
    ``TensorDescriptor.from_tensor(tensor, list(block), layout)`` makes (zero padding). A launch makes that object
    only where Triton launches; the direct launch keeps what its launcher makes of it (:class:`DirectLaunch`)."""

    tensor: torch.Tensor
    block: tuple
    layout: object

    def descriptor(self):
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        return TensorDescriptor.from_tensor(self.tensor, list(self.block), self.layout)


def _spec(arg) -> object:
    """What Triton specializes a tensor or :class:`Tma` argument on (or something finer); ``_UNKNOWN`` for any other
    argument (the integers and constexprs are a :class:`Launch`'s own, not keyed per call)."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, not arg.data_ptr() & 15
    if isinstance(arg, Tma):
        return Tma, arg.tensor.dtype, tuple(arg.block), arg.tensor.dim(), arg.layout
    return _UNKNOWN


def _specs(tensors: tuple) -> tuple:
    """:func:`_spec` of each argument, the tensors' inline: every eager launch computes it (on the H200 machine's CPU a
    Python call costs ~0.5 us)."""
    return tuple([(t.dtype, not t.data_ptr() & 15) if isinstance(t, torch.Tensor) else _spec(t) for t in tensors])


_UNKNOWN = object()


def _hooked() -> bool:
    """Whether a launch hook is set (Triton 3.6 keeps them in chains, empty when none is set)."""
    runtime = triton.knobs.runtime
    enter, leave = runtime.launch_enter_hook, runtime.launch_exit_hook
    return (enter is not None and bool(getattr(enter, "calls", True))) or (
        leave is not None and bool(getattr(leave, "calls", True)))


class DirectLaunch:
    """A compiled kernel's C launcher, called with the arguments Triton 3.6's Python launcher would pass it.

    Triton's launcher (``CudaLauncher.__call__``) allocates the kernel's scratch
    buffers, then (``wrap_handle_tensordesc``) turns each TMA descriptor into a
    ``CUtensorMap`` and its shape and strides -- a driver call and a few lists
    per descriptor and launch. Here that expansion is kept per (data pointer,
    shape, strides) of each descriptor's tensor: it is a function of those, of
    the padding (zero for every :class:`Tma`) and of the compiled kernel's own
    descriptor metadata (element type, box, swizzle), nothing else, so a kept
    one is the one Triton would make. The first expansion of each goes through
    Triton's descriptor object and its checks (alignment, strides). Kernels with
    scratch buffers are not launched this way (:func:`direct` returns None).
    """

    __slots__ = ("compiled", "c_launch", "head", "metadata", "expansions")

    # Expansions kept per compiled kernel (all are dropped when it is full): two a weight (``ws_rs``), so a plan
    # serves 2000 layers of one shape before that (a 70B Llama has 160 of its largest).
    KEEP = 4096

    def __init__(self, compiled, c_launch, head: tuple, metadata: dict):
        self.compiled = compiled  # (kept alive with the function handle in ``head``)
        self.c_launch, self.head, self.metadata = c_launch, head, metadata
        self.expansions: dict[tuple, list] = {}

    def expand(self, index: int, arg: Tma) -> list:
        """What Triton's launcher passes for descriptor argument ``index``: its CUtensorMap, shape and strides."""
        t = arg.tensor
        key = (index, t.data_ptr(), t.shape, t.stride())
        made = self.expansions.get(key)
        if made is None:
            from triton.backends.nvidia.driver import make_tensordesc_arg

            made = make_tensordesc_arg(arg.descriptor(), self.metadata[index])
            if self.metadata[index] is not None:  # (without metadata the expansion holds the tensor: not kept)
                if len(self.expansions) >= self.KEEP:
                    self.expansions.clear()
                self.expansions[key] = made
        return made

    def __call__(self, grid: tuple, stream: int, tensors: tuple, tail: tuple) -> None:
        args = []
        for i, t in enumerate(tensors):
            if isinstance(t, Tma):
                args.extend(self.expand(i, t))
            else:
                args.append(t)
        self.c_launch(*grid, stream, *self.head, *args, *tail)


def direct(compiled) -> DirectLaunch | None:
    """The :class:`DirectLaunch` of a compiled kernel, or None where every launch must go through Triton's (scratch
    buffers to allocate -- none of our kernels has any -- or a launcher not built as in Triton 3.6)."""
    launcher = compiled.run
    if launcher.global_scratch_size or launcher.profile_scratch_size:
        return None
    c_launch, metadata = launcher.launch, {}
    code = getattr(c_launch, "__code__", None)
    if code is not None:  # wrap_handle_tensordesc's closure over the C launcher and the descriptors' metadata
        cells = dict(zip(code.co_freevars, (cell.cell_contents for cell in c_launch.__closure__ or ())))
        if not {"launcher", "tensordesc_indices", "tensordesc_meta"} <= cells.keys():
            return None
        c_launch = cells["launcher"]
        meta = cells["tensordesc_meta"] or [None] * len(cells["tensordesc_indices"])
        metadata = dict(zip(sorted(cells["tensordesc_indices"]), meta))
    head = (compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
            compiled.packed_metadata, None, None, None)
    return DirectLaunch(compiled, c_launch, head, metadata)


class Launch:
    """``kernel[grid](*tensors, *ints, **constexprs, **options)``, straight into the compiled kernel's C launcher
    after the first launch of each specialization of ``tensors``.

    Args:
        kernel: a ``triton.jit`` (or Gluon) kernel whose signature is its tensor (and descriptor) arguments, then
            its integer ones, then its constexprs.
        grid: the launch grid (1 to 3 dimensions).
        ints: the integer arguments, in signature order.
        constexprs: the constexpr arguments by name, every one the signature has (with one left to its default,
            every launch goes through Triton).
        options: launch options (``num_warps``, ``launch_pdl``, ...).

    A call takes the tensor arguments: ``torch.Tensor`` or :class:`Tma`.
    """

    __slots__ = ("kernel", "grid", "ints", "constexprs", "options", "_tail", "_compiled", "_jit")

    def __init__(self, kernel, grid: tuple, ints: tuple, constexprs: dict, options: dict | None = None):
        self.kernel, self.grid, self.ints = kernel, (tuple(grid) + (1, 1))[:3], tuple(ints)
        self.constexprs, self.options = constexprs, options or {}
        self._tail = None  # the integers, then the constexprs' values in signature order, once the signature is known
        self._compiled: dict[tuple, DirectLaunch] = {}  # key (_key) -> the compiled kernel's direct launch
        self._jit = isinstance(kernel, JITFunction)  # (the interpreter's kernels are not)

    def _key(self, tensors: tuple) -> tuple | None:
        """The key this launch keeps its compiled kernel under for ``tensors``, or None where it launches through
        Triton every time (another Triton, the interpreter, a hook set, an argument type it does not know).

        Every eager launch computes it: the device comes from torch's C API (the tensors are on it, so CUDA is
        initialized).
        """
        if not (_DIRECT and self._jit) or _hooked() or self.kernel.pre_run_hooks:
            return None
        specs = _specs(tensors)
        if _UNKNOWN in specs:
            return None
        knobs = (triton.knobs.runtime.debug, triton.knobs.compilation.instrumentation_mode)  # in Triton's options too
        return torch._C._cuda_getDevice(), specs, knobs

    def __call__(self, *tensors) -> None:
        key = self._key(tensors)
        launch = None if key is None else self._compiled.get(key)
        if launch is not None:
            launch(self.grid, torch._C._cuda_getCurrentRawStream(key[0]), tensors, self._tail)
            return
        args = tuple(t.descriptor() if isinstance(t, Tma) else t for t in tensors) + self.ints
        compiled = self.kernel[self.grid](*args, **self.constexprs, **self.options)
        if key is None or compiled is None:  # (None: a JIT cache hook declined to compile it)
            return
        names = self.kernel.arg_names[len(args):]
        if sorted(names) != sorted(self.constexprs):  # a constexpr left to its default: Triton's path every time
            return
        launch = direct(compiled.result() if hasattr(compiled, "result") else compiled)  # (compiled async)
        if launch is not None:
            self._tail = self.ints + tuple(self.constexprs[n] for n in names)
            self._compiled[key] = launch
