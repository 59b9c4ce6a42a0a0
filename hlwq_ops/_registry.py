"""Register hlwq_ops on the allowlists of torchao's and transformers' loaders.

torchao's safetensors helpers (used by transformers' ``save_pretrained`` /
``from_pretrained``) rebuild only tensor subclasses named on their allowlists,
and ``config_from_dict`` finds config classes only in listed modules.
"""

from __future__ import annotations

from .config import HLWQConfig
from .tensor import HLWQTensor


def register() -> None:
    """Add HLWQTensor and HLWQConfig to torchao's allowlists (idempotent)."""
    from torchao.core import config as ao_config
    from torchao.prototype.safetensors import safetensors_utils

    safetensors_utils.ALLOWED_CLASSES.setdefault("HLWQTensor", HLWQTensor)
    if "HLWQTensor" not in safetensors_utils.ALLOWED_TENSORS_SUBCLASSES:
        safetensors_utils.ALLOWED_TENSORS_SUBCLASSES.append("HLWQTensor")
    ao_config.ALLOWED_AO_MODULES.add(HLWQConfig.__module__.rsplit(".", 1)[0])
