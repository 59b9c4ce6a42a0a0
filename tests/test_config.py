"""quantize_(model, hlwq_q5()) and friends."""

import logging

import pytest
import torch
from torchao.quantization import FqnToConfig, quantize_

import hlwq_ops
from hlwq_ops import HLWQConfig, HLWQTensor, hlwq, hlwq_q5

from ._utils import rel_error


def _mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.Linear(256, 64, bias=False)
    )


@pytest.mark.parametrize("bits", range(2, 9))
def test_shortcuts(bits):
    config = getattr(hlwq_ops, f"hlwq_q{bits}")()
    assert isinstance(config, HLWQConfig) and config.bits == bits and config.block_size == 128
    assert hlwq(bits=bits) == config


def test_quantize_model():
    m = _mlp()
    x = torch.randn(8, 256)
    ref = m(x)
    quantize_(m, hlwq_q5())
    for i in (0, 2, 3):
        assert isinstance(m[i].weight, HLWQTensor) and m[i].weight.bits == 5
        assert not m[i].weight.requires_grad
    assert rel_error(m(x), ref) < 0.1  # three Q5 layers, ~0.045 each
    assert "HLWQTensor(shape=(512, 256), bits=5" in repr(m)


def test_small_layers_are_skipped_with_one_line(caplog):
    m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 32))
    with caplog.at_level(logging.WARNING, logger="hlwq_ops"):
        quantize_(m, hlwq_q5())
    assert not isinstance(m[0].weight, HLWQTensor)
    assert isinstance(m[1].weight, HLWQTensor)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "in_features=64 is smaller than one block (128)" in lines[0]


def test_a_weight_that_cannot_be_quantized_is_named_by_its_module():
    """A bad weight's error named an index, not the module: the handler is not told the module's name, so it gives
    the module's class and sizes."""
    m = _mlp()
    with torch.no_grad():
        m[2].weight[3, 5] = float("inf")
    with pytest.raises(ValueError, match=r"cannot quantize the weight of Linear\(in_features=512, out_features=256, "
                                         r"bias=True\): weight has NaN or Inf .*quantized already"):
        quantize_(m, hlwq_q5())


def test_per_layer_bits_with_fqn_to_config():
    m = _mlp()
    quantize_(
        m,
        FqnToConfig({"0": hlwq(bits=3), "re:[23]": hlwq(bits=6)}),
        filter_fn=None,
    )
    assert [m[i].weight.bits for i in (0, 2, 3)] == [3, 6, 6]


def test_only_linear_modules_are_quantized(caplog):
    emb = torch.nn.Embedding(100, 256)
    with caplog.at_level(logging.WARNING, logger="hlwq_ops"):
        quantize_(emb, hlwq_q5(), filter_fn=lambda m, fqn: True)
    assert not isinstance(emb.weight, HLWQTensor)
    assert "only nn.Linear weights are quantized" in caplog.text


def test_quantize_twice_is_a_no_op(caplog):
    m = _mlp()
    quantize_(m, hlwq_q5())
    q = m[0].weight.qdata
    quantize_(m, hlwq(bits=4))
    assert m[0].weight.qdata is q


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 9}, "bits must be an integer in 2..8"),
        ({"bits": 1}, "bits must be an integer in 2..8"),
        ({"block_size": 100}, "block_size must be a power of two"),
        ({"block_size": 2048}, "block_size must be a power of two"),
        ({"scale_mode": "absmax"}, "scale_mode must be one of"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hlwq(**kwargs)


def test_config_round_trips_through_torchao_dict():
    from torchao.core.config import config_from_dict, config_to_dict

    config = hlwq(bits=4, block_size=64, scale_mode="lsq")
    assert config_from_dict(config_to_dict(config)) == config


def test_block_size_64():
    m = _mlp()
    x = torch.randn(4, 256)
    ref = m(x)
    quantize_(m, hlwq(bits=5, block_size=64))
    assert m[0].weight.block_size == 64
    assert rel_error(m(x), ref) < 0.1  # three Q5 layers, ~0.045 each
