"""hlwq_ops: HLWQ (Hadamard-Lloyd Weight Quantization) for PyTorch.

    from torchao.quantization import quantize_
    from hlwq_ops import hlwq_q5

    quantize_(model, hlwq_q5())
    model = torch.compile(model)
"""

from . import ops
from ._registry import register as _register
from .codebook import codebook, lloyd_max_gaussian
from .config import HLWQConfig, hlwq, hlwq_q2, hlwq_q3, hlwq_q4, hlwq_q5, hlwq_q6, hlwq_q7, hlwq_q8
from .grouping import GroupProjections
from .tensor import HLWQTensor

__version__ = "0.1.0"

__all__ = [
    "GroupProjections",
    "HLWQConfig",
    "HLWQTensor",
    "codebook",
    "hlwq",
    "hlwq_q2",
    "hlwq_q3",
    "hlwq_q4",
    "hlwq_q5",
    "hlwq_q6",
    "hlwq_q7",
    "hlwq_q8",
    "lloyd_max_gaussian",
    "ops",
]

_register()
