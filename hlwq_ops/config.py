"""``quantize_(model, hlwq_q5())``: the torchao config and its module handler."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torchao.core.config import AOBaseConfig
from torchao.quantization.transform_module import register_quantize_module_handler

from . import format as fmt
from .hadamard import check_block_size
from .tensor import HLWQTensor

__all__ = ["HLWQConfig", "hlwq", "hlwq_q2", "hlwq_q3", "hlwq_q4", "hlwq_q5", "hlwq_q6", "hlwq_q7", "hlwq_q8"]

logger = logging.getLogger(__name__)


@dataclass
class HLWQConfig(AOBaseConfig):
    """Weight-only HLWQ quantization of ``nn.Linear`` weights.

    Args:
        bits: code width, 2..8 (5 is the default, 5.125 bits per weight).
        block_size: weights per block along in_features, a power of two in 32..1024.
        scale_mode: how block scales are chosen: "search" (default), "lsq" or
            "norm" (see :mod:`hlwq_ops.format`); it changes quality, not speed.
    """

    bits: int = 5
    block_size: int = 128
    scale_mode: str = "search"

    def __post_init__(self):
        fmt.check_bits(self.bits)
        check_block_size(self.block_size)
        fmt.check_scale_mode(self.scale_mode)
        from ._registry import teach_transformers_the_codebook  # (it imports this module)

        teach_transformers_the_codebook()


hlwq = HLWQConfig


def hlwq_q2() -> HLWQConfig:
    return HLWQConfig(bits=2)


def hlwq_q3() -> HLWQConfig:
    return HLWQConfig(bits=3)


def hlwq_q4() -> HLWQConfig:
    return HLWQConfig(bits=4)


def hlwq_q5() -> HLWQConfig:
    """HLWQ Q5: 5-bit codes in 128-weight blocks (the headline recipe)."""
    return HLWQConfig(bits=5)


def hlwq_q6() -> HLWQConfig:
    return HLWQConfig(bits=6)


def hlwq_q7() -> HLWQConfig:
    return HLWQConfig(bits=7)


def hlwq_q8() -> HLWQConfig:
    return HLWQConfig(bits=8)


def _skip_reason(module: torch.nn.Module, weight: torch.Tensor, config: HLWQConfig) -> str | None:
    if not isinstance(module, torch.nn.Linear):
        return "only nn.Linear weights are quantized (embeddings are looked up, not multiplied)"
    if isinstance(weight, HLWQTensor):
        return "it is already HLWQ-quantized"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return "its weight is not a 2-D tensor"
    if not weight.is_floating_point():
        return f"its weight dtype is {weight.dtype}, not floating point"
    if weight.shape[1] < config.block_size:
        return f"in_features={weight.shape[1]} is smaller than one block ({config.block_size})"
    return None


class _ExtraRepr:
    """A quantized module's ``extra_repr``: the original one, then the HLWQ parameter.

    An object, not a lambda bound to the module: the module's ``__dict__`` holds
    it, and ``torch.save(model)`` pickles that (a bound lambda saves, then fails
    to load).
    """

    def __init__(self, module: torch.nn.Module, parameter_name: str):
        self.module = module
        self.original = module.__dict__.get("extra_repr")  # an earlier instance-level one, if any
        self.parameter_name = parameter_name

    def __call__(self) -> str:
        original = self.original() if self.original is not None else type(self.module).extra_repr(self.module)
        if torch.compiler.is_compiling():  # (``vmap(module)`` names the module it maps; Dynamo cannot repr a tensor)
            return f"{original}, {self.parameter_name}=HLWQTensor"
        return f"{original}, {self.parameter_name}={getattr(self.module, self.parameter_name)!r}"


@register_quantize_module_handler(HLWQConfig)
def _hlwq_transform(module: torch.nn.Module, config: HLWQConfig, *, parameter_name: str = "weight"):
    weight = getattr(module, parameter_name, None)
    reason = _skip_reason(module, weight, config)
    if reason is not None:
        logger.warning("hlwq: not quantizing %s(%s): %s", type(module).__name__, module.extra_repr(), reason)
        return module
    try:
        quantized = HLWQTensor.from_hp(weight, config.bits, config.block_size, scale_mode=config.scale_mode)
    except ValueError as error:  # (the handler is not told the module's name: its class and sizes say which)
        raise ValueError(f"hlwq: cannot quantize the {parameter_name} of {type(module).__name__}"
                         f"({module.extra_repr()}): {error} (modules quantize_ reached before it are quantized "
                         "already)") from error
    setattr(module, parameter_name, torch.nn.Parameter(quantized, requires_grad=False))
    module.extra_repr = _ExtraRepr(module, parameter_name)
    return module
