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
specialization -- each tensor's dtype and 16-byte alignment, each descriptor's
dtype, block, rank and layout -- plus the device and Triton's ``debug`` and
``instrumentation_mode`` knobs; the integers and constexprs are the object's
own. The first launch of a key goes through Triton (compiling if needed), later
ones call the compiled kernel's launcher directly. The key is finer than
Triton's own (never coarser), so a kernel is never reused for arguments Triton
would have compiled another one for. Not repeated after the first launch:
Triton's check that the globals a kernel read have not changed (ours are
constants).

The direct call is taken only with the Triton versions it was checked with
on a GPU (:data:`CHECKED`), without launch or pre-run hooks (a profiler's hooks
see every launch through Triton), and never in the interpreter (``TRITON_INTERPRET=1``
makes kernels of another class than ``JITFunction``).
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.runtime.jit import JITFunction

__all__ = ["CHECKED", "Launch", "cdiv", "clear_plans", "config_key", "config_of", "plan_cache", "run_launcher"]

# Triton versions whose CompiledKernel.run (the launcher) signature this was checked against on a GPU.
CHECKED = ("3.6.",)
_DIRECT = triton.__version__.startswith(CHECKED)


_PLAN_CACHES: list = []


def plan_cache(fn):
    """``functools.lru_cache(maxsize=1024)`` for a wrapper's plan function (a call signature's launch, resolved once),
    emptied with the others by :func:`clear_plans`."""
    cached = functools.lru_cache(maxsize=1024)(fn)
    _PLAN_CACHES.append(cached)
    return cached


def clear_plans() -> None:
    """Forget every plan (and so every compiled kernel a :class:`Launch` kept): for tests that swap a kernel."""
    for cached in _PLAN_CACHES:
        cached.cache_clear()


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


def _spec(arg) -> object:
    """What Triton specializes a tensor or TMA descriptor argument on (or something finer); ``_UNKNOWN`` for any
    other argument (the integers and constexprs are a :class:`Launch`'s own, not keyed per call)."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    layout = getattr(arg, "layout", None)
    if layout is not None and hasattr(arg, "block_shape") and hasattr(arg, "base"):  # a TMA tensor descriptor
        return (type(arg), arg.base.dtype, tuple(arg.block_shape), len(arg.shape), layout,
                getattr(arg, "padding", None))
    return _UNKNOWN


_UNKNOWN = object()


def _hooked() -> bool:
    """Whether a launch hook is set (Triton 3.6 keeps them in chains, empty when none is set)."""
    hooks = (triton.knobs.runtime.launch_enter_hook, triton.knobs.runtime.launch_exit_hook)
    return any(hook is not None and bool(getattr(hook, "calls", True)) for hook in hooks)


def run_launcher(compiled, grid: tuple, values: tuple, device: int | None = None) -> None:
    """Call a compiled kernel's launcher on ``device``'s (default: the current device's) stream: ``values`` are all
    of the kernel's arguments in signature order, constexprs included (the launcher skips them); no launch hooks."""
    g = tuple(grid) + (1, 1)
    stream = torch._C._cuda_getCurrentRawStream(torch.cuda.current_device() if device is None else device)
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None, None, None, *values)


class Launch:
    """``kernel[grid](*tensors, *ints, **constexprs, **options)``, straight into the compiled kernel after the first
    launch of each specialization of ``tensors``.

    Args:
        kernel: a ``triton.jit`` (or Gluon) kernel whose signature is its tensor (and descriptor) arguments, then
            its integer ones, then its constexprs.
        grid: the launch grid (1 to 3 dimensions).
        ints: the integer arguments, in signature order.
        constexprs: the constexpr arguments by name, every one the signature has (with one left to its default,
            every launch goes through Triton).
        options: launch options (``num_warps``, ``launch_pdl``, ...).
    """

    __slots__ = ("kernel", "grid", "ints", "constexprs", "options", "_values", "_compiled")

    def __init__(self, kernel, grid: tuple, ints: tuple, constexprs: dict, options: dict | None = None):
        self.kernel, self.grid, self.ints = kernel, tuple(grid), tuple(ints)
        self.constexprs, self.options = constexprs, options or {}
        self._values = None  # the constexprs' values in signature order, once the signature is known to take them
        self._compiled: dict[tuple, object] = {}  # key (_key) -> compiled kernel

    def _key(self, tensors: tuple) -> tuple | None:
        """The key this launch keeps its compiled kernel under for ``tensors``, or None where it launches through
        Triton every time (another Triton, the interpreter, a hook set, an argument type it does not know)."""
        kernel = self.kernel
        if not _DIRECT or not isinstance(kernel, JITFunction) or _hooked() or kernel.pre_run_hooks:
            return None
        specs = tuple(_spec(t) for t in tensors)
        if _UNKNOWN in specs:
            return None
        knobs = (triton.knobs.runtime.debug, triton.knobs.compilation.instrumentation_mode)  # in Triton's options too
        return torch.cuda.current_device(), specs, knobs

    def __call__(self, *tensors) -> None:
        args = tensors + self.ints
        key = self._key(tensors)
        compiled = None if key is None else self._compiled.get(key)
        if compiled is not None:
            run_launcher(compiled, self.grid, args + self._values, key[0])
            return
        compiled = self.kernel[self.grid](*args, **self.constexprs, **self.options)
        if key is None or compiled is None:  # (None: a JIT cache hook declined to compile it)
            return
        names = self.kernel.arg_names[len(args):]
        if sorted(names) != sorted(self.constexprs):  # a constexpr left to its default: Triton's path every time
            return
        self._values = tuple(self.constexprs[n] for n in names)
        self._compiled[key] = compiled.result() if hasattr(compiled, "result") else compiled  # (compiled async)
