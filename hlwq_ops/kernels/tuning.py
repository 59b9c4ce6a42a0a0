"""Launch configurations: the only place that picks them.

``path_for(M)`` chooses the kernel family by the number of activation rows;
``config_for`` picks a kernel's tile (and the GEMV's split-K) for a shape. On
the first call for a key ``(kernel, N, K_pad, bits, M bucket, device)`` it
times a handful of candidates (seconds, dominated by compiling them) unless
``HLWQ_AUTOTUNE=0``; results persist in a JSON file under
``$HLWQ_CACHE_DIR`` (default ``~/.cache/hlwq_ops``) so later processes skip it.
During CUDA-graph capture, or on the CPU (the Triton interpreter), an untuned
key gets the heuristic default instead.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["GEMV_MAX_M", "MMA_MAX_M", "PATHS", "path_for", "m_bucket", "candidates", "config_for"]

# Largest M each kernel family serves (crossovers measured on H100, benchmarks/RESULTS.md):
# the GEMV reads the weight once per activation row, the tensor-core kernel once
# per 16..64 rows; past MMA_MAX_M dequantize + cuBLAS wins.
GEMV_MAX_M = 2
MMA_MAX_M = 64
PATHS = ("gemv", "mma", "dequant")
_SPLITS = (1, 2, 4, 8, 16, 32)


def path_for(M: int) -> str:
    """Kernel family for M activation rows; ``HLWQ_PATH`` forces one (for debugging)."""
    forced = os.environ.get("HLWQ_PATH")
    if forced:
        if forced not in PATHS:
            raise ValueError(f"HLWQ_PATH must be one of {PATHS}, got {forced!r}")
        return forced
    if M <= GEMV_MAX_M:
        return "gemv"
    return "mma" if M <= MMA_MAX_M else "dequant"


def m_bucket(M: int) -> int:
    return 1 << max(0, (M - 1).bit_length())


def _split_k(n_programs: int, k_steps: int, sm_count: int) -> int:
    """Smallest split giving ~2 programs per SM, keeping >= 2 steps per split."""
    for s in _SPLITS:
        if n_programs * s >= 2 * sm_count or k_steps // (2 * s) == 0:
            return s
    return _SPLITS[-1]


def candidates(kernel: str, M: int, N: int, k_pad: int, sm_count: int) -> list[dict]:
    """Configs worth timing for a kernel ("gemv" or "mma") on (M, N, K_pad), the favourite first."""
    out = []
    if kernel == "gemv":
        # measured on H100 (benchmarks/NOTES.md): 16 groups per step, 2 warps lead
        for BN, G, num_warps in ((32, 16, 2), (32, 8, 2), (16, 8, 1), (32, 4, 2)):
            n_programs = -(-N // BN) * M
            k_steps = -(-k_pad // (32 * G))
            split = _split_k(n_programs, k_steps, sm_count)
            for s in sorted({split, max(1, split // 2)}, reverse=True):
                out.append(dict(BN=BN, G=G, SPLIT_K=s, num_warps=num_warps, num_stages=1))
        return out
    BM = min(max(16, m_bucket(M)), 64)
    for BN, G, num_warps, num_stages in ((64, 2, 4, 2), (128, 2, 4, 2), (64, 4, 4, 2), (128, 4, 8, 2)):
        out.append(dict(BM=BM, BN=BN, G=G, num_warps=num_warps, num_stages=num_stages))
    return out


_TUNED: dict[str, dict] = {}
_LOADED: set[str] = set()


@functools.lru_cache(maxsize=None)
def _cache_file(device: torch.device) -> Path:
    name = torch.cuda.get_device_name(device).replace(" ", "_")
    root = Path(os.environ.get("HLWQ_CACHE_DIR", Path.home() / ".cache" / "hlwq_ops"))
    return root / f"configs-{name}-triton{__import__('triton').__version__}.json"


def _load(device: torch.device) -> None:
    path = _cache_file(device)
    if str(path) in _LOADED:
        return
    _LOADED.add(str(path))
    if path.exists():
        try:
            _TUNED.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass  # a broken cache only costs a re-tune


def _save(device: torch.device) -> None:
    path = _cache_file(device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_TUNED, indent=1, sort_keys=True))
    except OSError:
        pass  # read-only home: tuning still holds for this process


def config_for(
    kernel: str, M: int, N: int, k_pad: int, bits: int, device: torch.device, run: Callable[[dict], object]
) -> dict:
    """The config of ``kernel`` for this shape, tuned on first use (see the module docstring).

    Args:
        run: launches the kernel with a given config (used for timing).
    """
    if device.type != "cuda":
        return candidates(kernel, M, N, k_pad, 8)[0]
    _load(device)
    key = f"{kernel}/{N}x{k_pad}/q{bits}/m{m_bucket(M)}"
    if key in _TUNED:  # the hot path: one dict lookup per call
        return _TUNED[key]
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    configs = candidates(kernel, M, N, k_pad, sm_count)
    if os.environ.get("HLWQ_AUTOTUNE", "1") == "0" or torch.cuda.is_current_stream_capturing():
        return configs[0]
    import triton.runtime.errors
    import triton.testing

    start = time.perf_counter()
    timings = []
    for config in configs:
        try:
            timings.append((triton.testing.do_bench(lambda: run(config), warmup=5, rep=20), config))
        except triton.runtime.errors.OutOfResources:
            continue  # e.g. shared memory: this GPU cannot run that tile
    best = min(timings, key=lambda t: t[0])[1]
    _TUNED[key] = best
    _TUNED[key + "/tuning_s"] = round(time.perf_counter() - start, 2)
    _save(device)
    return best
