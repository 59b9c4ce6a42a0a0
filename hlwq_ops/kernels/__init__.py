"""Triton kernels (no torch.library here): FWHT, LUT GEMV, tensor-core GEMM, dequantization.

:func:`linear_rotated` is the CUDA ``y = xr @ Wr.T + bias``: it picks the
kernel family by M (:func:`hlwq_ops.kernels.tuning.path_for`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import tuning
from .dequant import dequantize_rotated
from .fwht import MAX_KERNEL_BLOCK, fwht
from .gemv import gemv
from .mma import mma

__all__ = ["MAX_KERNEL_BLOCK", "dequantize_rotated", "fwht", "gemv", "linear_rotated", "mma", "tuning"]

_KERNELS = {"gemv": gemv, "mma": mma}


def linear_rotated(
    xr: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    bits: int,
    block_size: int,
    codebook: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``xr @ Wr.T + bias`` for (..., K_pad) rotated activations; (..., N) in ``out_dtype``."""
    lead, k_pad = xr.shape[:-1], xr.shape[-1]
    N = qdata.shape[0]
    x2 = xr.reshape(-1, k_pad)
    M = x2.shape[0]
    if M == 0:
        return xr.new_empty((*lead, N), dtype=out_dtype)
    path = tuning.path_for(M)
    if path in _KERNELS:
        x2 = x2.to(torch.float32).contiguous()
        kernel = _KERNELS[path]

        def run(config, q=qdata, s=scale):
            return kernel(x2, q, s, bias, bits, block_size, codebook, out_dtype, config)

        y = run(tuning.config_for(path, M, N, k_pad, bits, (qdata, scale), run))
    else:
        wr = dequantize_rotated(qdata, scale, bits, block_size, codebook, out_dtype)
        y = F.linear(x2.to(out_dtype), wr, None if bias is None else bias.to(out_dtype))
    return y.reshape(*lead, N)
