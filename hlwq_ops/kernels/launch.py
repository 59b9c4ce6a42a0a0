"""Launching a compiled Triton kernel again without Triton's per-call binding.

``kernel[grid](*args, **constexprs)`` runs ``JITFunction.run`` on every call:
it binds the kernel's arguments (about forty here), computes their
specialization and a cache key, looks the compiled kernel up and only then
calls its launcher. On the H200 machine's CPU a launch took 34-46 us that
way against 15-18 us for the launcher alone (``benchmarks/RESULTS.md``
34a-b) -- host time every eager call pays, a 32-layer prefill 448-641
times a forward. Launched directly, the eager Q5 prefill of the Llama-3-8B
shape took 113.8 ms of wall time against 135.8 (34b).

:func:`launch` keys the compiled kernel by everything Triton specializes a
launch on -- each tensor's dtype and 16-byte alignment, each integer's value
class (equal to 1, divisible by 16, its width), each descriptor's dtype, block
and layout -- plus the constexprs, the launch options and the device; the
first launch of a key goes through Triton (compiling if needed) and later ones
call the compiled kernel's launcher directly. The key is finer than Triton's
own (never coarser; Triton's ``debug`` and ``instrumentation_mode`` knobs are
in it too), so a kernel is never reused for arguments Triton would have
compiled another one for. Not repeated after the first launch: Triton's check
that the globals a kernel read have not changed (ours are constants).

The direct call is taken only with the Triton versions it was checked with
on a GPU (:data:`CHECKED`), without launch or pre-run hooks (a profiler's hooks
see every launch through Triton), and never in the interpreter (``TRITON_INTERPRET=1``
makes kernels of another class than ``JITFunction``).
"""

from __future__ import annotations

import torch
import triton
from triton.runtime.jit import JITFunction

__all__ = ["CHECKED", "launch", "run_launcher"]

# Triton versions whose CompiledKernel.run (the launcher) signature this was checked against on a GPU.
CHECKED = ("3.6.",)
_DIRECT = triton.__version__.startswith(CHECKED)

_COMPILED: dict[tuple, tuple] = {}  # key -> (compiled kernel, the constexprs' values in signature order)
_MAX_ENTRIES = 4096  # distinct (kernel, specialization) pairs kept; past it the cache starts again


def _spec(arg) -> object:
    """What Triton specializes a runtime argument on (or something finer); ``_UNKNOWN`` for a type not handled."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool):
        return bool, arg
    if isinstance(arg, int):
        width = 32 if -(2**31) <= arg < 2**31 else 64 if -(2**63) <= arg < 2**63 else "u64"
        return arg == 1, arg % 16 == 0, width
    if arg is None:
        return None
    if isinstance(arg, float):
        return float
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


def _key(kernel, args: tuple, constexprs: dict, options: dict) -> tuple | None:
    """The key :func:`launch` keeps ``kernel``'s compiled form under for these arguments, or None where it launches
    through Triton every time (another Triton, the interpreter, a hook set, an argument type it does not know)."""
    if not _DIRECT or not isinstance(kernel, JITFunction) or _hooked() or kernel.pre_run_hooks:
        return None
    specs = tuple(_spec(a) for a in args)
    if _UNKNOWN in specs:
        return None
    knobs = (triton.knobs.runtime.debug, triton.knobs.compilation.instrumentation_mode)  # in Triton's options too
    return kernel, torch.cuda.current_device(), specs, tuple(constexprs.items()), tuple(options.items()), knobs


def run_launcher(compiled, grid: tuple, values: tuple) -> None:
    """Call a compiled kernel's launcher on the current device's stream: ``values`` are all of the kernel's
    arguments in signature order, constexprs included (the launcher skips them); no launch hooks."""
    g = tuple(grid) + (1, 1)
    stream = torch._C._cuda_getCurrentRawStream(torch.cuda.current_device())
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None, None, None, *values)


def launch(kernel, grid: tuple, args: tuple, constexprs: dict, options: dict | None = None) -> None:
    """``kernel[grid](*args, **constexprs, **options)``, straight into the compiled kernel after its first launch.

    Args:
        kernel: a ``triton.jit`` (or Gluon) kernel whose runtime arguments all
            come before its constexprs in its signature.
        args: the runtime arguments, in signature order.
        constexprs: the constexpr arguments by name, every one the signature
            has (a default left out takes Triton's path every time).
        options: launch options (``num_warps``, ``launch_pdl``, ...).
    """
    options = options or {}
    key = _key(kernel, args, constexprs, options)
    entry = None if key is None else _COMPILED.get(key)
    if entry is not None:
        compiled, const_values = entry
        run_launcher(compiled, grid, args + const_values)
        return
    compiled = kernel[grid](*args, **constexprs, **options)
    if key is None or compiled is None:  # (None: a JIT cache hook declined to compile it)
        return
    names = kernel.arg_names[len(args):]
    if sorted(names) != sorted(constexprs):  # a constexpr left to its default: Triton's path every time
        return
    if hasattr(compiled, "result"):  # compiled asynchronously
        compiled = compiled.result()
    if len(_COMPILED) >= _MAX_ENTRIES:
        _COMPILED.clear()
    _COMPILED[key] = (compiled, tuple(constexprs[n] for n in names))
