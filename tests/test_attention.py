"""One query position attending a grouped-query cache without repeating its heads (hlwq_ops.attention)."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.integrations import sdpa_attention
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

from hlwq_ops.attention import packed_decode_attention, packed_decode_sdpa

SMALL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, vocab_size=512)


class _Layer(torch.nn.Module):
    """What transformers' attention functions read from a layer."""

    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True
        self.training = False


def _inputs(batch=2, kv_heads=2, groups=4, length=1, cache=11, dim=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, length, kv_heads * groups, dim, generator=g, dtype=dtype).transpose(1, 2)  # a view
    key = torch.randn(batch, kv_heads, cache, dim, generator=g, dtype=dtype)
    value = torch.randn(batch, kv_heads, cache, dim + 8, generator=g, dtype=dtype)  # (its own head size)
    mask = torch.rand(batch, 1, length, cache, generator=g) < 0.7
    mask[..., 0] = True  # (every query attends to something)
    return query, key, value, mask


def _calls(monkeypatch) -> list:
    """Record each call that reaches transformers' SDPA attention."""
    seen = []
    stock = sdpa_attention.sdpa_attention_forward

    def recording(*args, **kwargs):
        seen.append(args[1].shape)
        return stock(*args, **kwargs)

    monkeypatch.setattr("hlwq_ops.attention.sdpa_attention_forward", recording)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [2, 4])
def test_one_position_attends_each_head_as_transformers_does(dtype, groups, monkeypatch):
    """Against transformers' SDPA attention (the heads repeated) and the float64 softmax of each head."""
    seen = _calls(monkeypatch)
    query, key, value, mask = _inputs(groups=groups, dtype=dtype)
    layer = _Layer(groups)
    out, weights = packed_decode_sdpa(layer, query, key, value, mask, scaling=0.3)
    assert seen == [] and weights is None
    expected, _ = sdpa_attention.sdpa_attention_forward(layer, query, key, value, mask, scaling=0.3)
    assert out.shape == expected.shape == (2, 1, 2 * groups, value.shape[-1]) and out.is_contiguous()
    heads = torch.arange(2 * groups) // groups  # each query head's key/value head
    scores = (query.double() @ key.double()[:, heads].transpose(-1, -2)) * 0.3
    reference = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ value.double()[:, heads]
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.double(), reference.transpose(1, 2), atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=tolerance)


def test_a_broken_packing_is_caught():
    """The grouping is the layer's: query head h belongs to key/value head h // groups (a mutant pairing heads
    round-robin instead differs)."""
    query, key, value, mask = _inputs(groups=4)
    out, _ = packed_decode_sdpa(_Layer(4), query, key, value, mask)
    round_robin = query.reshape(2, 4, 2, 16).transpose(1, 2)  # head h -> key/value head h % 2
    wrong = torch.nn.functional.scaled_dot_product_attention(round_robin, key, value, attn_mask=mask)
    assert not torch.allclose(out, wrong.transpose(1, 2).reshape(2, 8, 1, 24).transpose(1, 2), atol=1e-3)


@pytest.mark.parametrize(
    "case",
    ["prompt", "no mask", "a mask per head", "one head per key/value head", "position bias", "soft cap"],
)
def test_everything_else_goes_to_transformers_sdpa(case, monkeypatch):
    seen = _calls(monkeypatch)
    query, key, value, mask = _inputs(length=3 if case == "prompt" else 1)
    groups, kwargs = 4, {}
    if case == "no mask":
        mask = None
    elif case == "a mask per head":
        mask = mask.expand(2, 8, 1, 11)
    elif case == "one head per key/value head":
        groups, key, value = 1, key.repeat_interleave(4, 1), value.repeat_interleave(4, 1)
    elif case == "position bias":
        kwargs["position_bias"] = torch.zeros(2, 8, 1, 11)
    elif case == "soft cap":
        kwargs["softcap"] = 30.0
    layer = _Layer(groups)
    if case == "soft cap":  # (transformers 5.25 refuses it, 5.17 ignores it: either way its call)
        try:
            packed_decode_sdpa(layer, query, key, value, mask, **kwargs)
        except ValueError as error:
            assert "softcap" in str(error)
        assert len(seen) == 1
        return
    out, _ = packed_decode_sdpa(layer, query, key, value, mask, **kwargs)
    assert len(seen) == 1
    expected, _ = sdpa_attention.sdpa_attention_forward(layer, query, key, value, mask, **kwargs)
    assert torch.equal(out, expected)


def _llama():
    return LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **SMALL)).eval()


def _qwen35():
    config = Qwen3_5TextConfig(
        num_key_value_heads=2, head_dim=64, linear_num_key_heads=4, linear_num_value_heads=4,
        linear_key_head_dim=32, linear_value_head_dim=32, layer_types=["linear_attention", "full_attention"], **SMALL,
    )
    return Qwen3_5ForCausalLM(config).eval()


@pytest.mark.parametrize("make", [_llama, _qwen35])
def test_the_block_puts_it_behind_sdpa_and_back(make, monkeypatch):
    """Within the block the model's SDPA layers call it (the prompt's too, which it hands on), with the tokens of
    transformers' SDPA attention; the model's settings never change, and transformers' function is back after."""
    torch.manual_seed(0)
    model = make()
    settings = {id(m): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}
    calls = []
    real = packed_decode_sdpa

    def counting(*args, **kwargs):
        calls.append(args[1].shape[2])
        return real(*args, **kwargs)

    monkeypatch.setattr("hlwq_ops.attention.packed_decode_sdpa", counting)
    ids = torch.randint(0, 512, (2, 6))
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static")
        with packed_decode_attention(model):
            assert ALL_ATTENTION_FUNCTIONS["sdpa"] is counting
            tokens = model.generate(ids, max_new_tokens=5, do_sample=False, cache_implementation="static")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention.sdpa_attention_forward
    assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping  # (no override left behind)
    assert settings == {id(m): m.config._attn_implementation for m in model.modules() if hasattr(m, "config")}
    assert torch.equal(tokens, expected)
    full_attention_layers = sum(1 for m in model.modules() if hasattr(m, "num_key_value_groups"))
    assert calls.count(6) == full_attention_layers and calls.count(1) == 4 * full_attention_layers


def test_the_block_leaves_other_implementations_and_overrides_alone(monkeypatch):
    eager = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, attn_implementation="eager", **SMALL))
    with packed_decode_attention(eager):
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention.sdpa_attention_forward
    mine = lambda *args, **kwargs: sdpa_attention.sdpa_attention_forward(*args, **kwargs)  # noqa: E731
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._local_mapping, "sdpa", mine)
    with packed_decode_attention(_llama()):
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is mine


def test_the_block_puts_it_back_after_an_error():
    with pytest.raises(RuntimeError, match="inside"), packed_decode_attention(_llama()):
        raise RuntimeError("inside")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention.sdpa_attention_forward


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 8])
def test_gpu_llama_3_8b_heads_against_float64(batch):
    """Llama-3-8B's heads (32 query, 8 key/value, 128 wide) over a 384-position bf16 cache, on whichever SDPA
    kernel CUDA picks for the packed queries, against the float64 softmax and transformers' SDPA attention."""
    query, key, value, mask = (t.cuda() for t in _inputs(batch, 8, 4, 1, 384, 128, torch.bfloat16))
    value = value[..., :128].contiguous()
    layer = _Layer(4)
    out, _ = packed_decode_sdpa(layer, query, key, value, mask, scaling=128**-0.5)
    expected, _ = sdpa_attention.sdpa_attention_forward(layer, query, key, value, mask, scaling=128**-0.5)
    heads = torch.arange(32, device="cuda") // 4
    scores = (query.double() @ key.double()[:, heads].transpose(-1, -2)) * 128**-0.5
    reference = (scores.masked_fill(~mask, float("-inf")).softmax(-1) @ value.double()[:, heads]).transpose(1, 2)
    assert (out.double() - reference).abs().max() <= 2 * (expected.double() - reference).abs().max() + 1e-3
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("compile", [False, True])
def test_graph_decoder_decodes_with_packed_attention(compile, monkeypatch):
    """GraphDecoder takes no packed path by default; with packed_attention=True its steps take it (the prompt does
    not), give the tokens of transformers' SDPA attention, and leave transformers' function as it was."""
    from hlwq_ops import attention
    from hlwq_ops.decode import GraphDecoder

    model = _llama()
    model.generation_config.eos_token_id = None
    ids = torch.randint(0, 512, (2, 6))
    seen = {}  # (a dict, not a list: dynamo guards on a list's length, and would trace every step again)
    real = attention._packable

    def recording(module, query, *args):
        packable = real(module, query, *args)
        seen[query.shape[2], packable] = True
        return packable

    monkeypatch.setattr(attention, "_packable", recording)
    expected = GraphDecoder(model, compile=compile).generate(ids, 7)
    assert not seen  # (off by default)
    torch._dynamo.reset()
    assert torch.equal(GraphDecoder(model, compile=compile, packed_attention=True).generate(ids, 7), expected)
    assert (6, False) in seen and (1, True) in seen and (1, False) not in seen
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention.sdpa_attention_forward


def test_graph_decoder_with_packed_attention_on_a_model_that_tests_the_name():
    """Falcon's attention (transformers 5.17) takes its own eager path unless its config names SDPA: a grouped-query
    rotary Falcon decodes generate()'s tokens (they differed while the block renamed the attention)."""
    from transformers import FalconConfig, FalconForCausalLM

    from hlwq_ops.decode import GraphDecoder

    torch.manual_seed(0)
    config = FalconConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                          new_decoder_architecture=True, alibi=False, vocab_size=512)
    model = FalconForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    ids = torch.randint(0, 512, (2, 6))
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=7, do_sample=False, cache_implementation="static")
    assert torch.equal(GraphDecoder(model, compile=False, packed_attention=True).generate(ids, 7), expected)
