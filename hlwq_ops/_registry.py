"""Register hlwq_ops on the allowlists of torchao's and transformers' loaders.

torchao's safetensors helpers (used by transformers' ``save_pretrained`` /
``from_pretrained``) rebuild only tensor subclasses named on their allowlists,
and ``config_from_dict`` finds config classes only in listed modules.
transformers' torchao loader gathers a quantized weight's stored tensors by a
fixed list of suffixes (``_weight_qdata``, ``_weight_scale``, ...); a custom
codebook (``_weight_codebook``: seed checkpoints' centroids) is added to it.
"""

from __future__ import annotations

import sys

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


def teach_transformers_the_codebook() -> None:
    """Add ``_{param}_codebook`` to the stored names transformers' torchao loader gathers for a quantized weight
    (idempotent; nothing when transformers is not imported or builds that list in a way not known here).

    Without it a checkpoint with custom codebooks fails ``from_pretrained`` (the codebooks are left over). The
    list is a property ``serialized_names`` in transformers 5.25, written into ``get_weight_conversions`` in 5.17.
    Called where an :class:`HLWQConfig` is made (``from_pretrained`` makes one from the checkpoint's config before
    it reads weights), so importing hlwq_ops does not import transformers.
    """
    if "transformers" not in sys.modules:
        return
    try:
        from transformers.core_model_loading import WeightConverter
        from transformers.quantizers.quantizer_torchao import TorchAoHfQuantizer
    except ImportError:
        return
    if getattr(TorchAoHfQuantizer, "_hlwq_codebook", False):
        return
    names = TorchAoHfQuantizer.__dict__.get("serialized_names")
    if isinstance(names, property):

        def serialized_names(self):
            return {param: [*stored, f"_{param}_codebook"] for param, stored in names.fget(self).items()}

        TorchAoHfQuantizer.serialized_names = property(serialized_names)
    elif "get_weight_conversions" in TorchAoHfQuantizer.__dict__:
        conversions = TorchAoHfQuantizer.get_weight_conversions

        def get_weight_conversions(self):
            return [_with_codebook(c, WeightConverter) for c in conversions(self)]

        TorchAoHfQuantizer.get_weight_conversions = get_weight_conversions
    else:
        return
    TorchAoHfQuantizer._hlwq_codebook = True


def _with_codebook(converter, weight_converter):
    """``converter`` also gathering ``_{param}_codebook`` where it gathers ``_{param}_qdata`` (built anew from the
    patterns it was given: its own lists are processed in place by its constructor)."""
    sources = list(converter._original_source_patterns)
    qdata = [s for s in sources if s.endswith("_qdata")]
    if len(qdata) != 1:
        return converter
    return weight_converter(
        source_patterns=[*sources, qdata[0].removesuffix("_qdata") + "_codebook"],
        target_patterns=list(converter._original_target_patterns),
        operations=converter.operations,
        force_cpu=converter.force_cpu,
    )
