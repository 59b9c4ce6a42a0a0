"""Seed checkpoints (polar_engine_v4, hlwq-q5): bit-exact import, centroids kept, errors.

The checkpoints are written here from our reference quantization
(``scale_mode="norm"``, the seed's math), converted to each seed layout;
hlwq-q5 codes are chosen against the seed's own codebook (:func:`seed_codebook`).
"""

import io
import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from hlwq_ops import HLWQTensor, codebook
from hlwq_ops.codebook import gaussian_mse
from hlwq_ops.format import dequantize_ref, quantize_ref, unpack_codes
from hlwq_ops.seed import _unpack_big_endian_5bit, load_seed_into, load_seed_tensors, seed_codebook

from ._utils import rel_error

B = 128


# -- writing seed checkpoints --------------------------------------------------


def _quantize(w, bits, centroids=None):
    """Our reference packing, scale = block norm: (qdata, scale)."""
    return quantize_ref(w, bits, B, codebook=centroids, scale_mode="norm")


def _seed_codes(qdata, bits):
    """(N, K_pad) int8 centroid indices, 8-bit codes wrapped as int8 stores them."""
    codes = unpack_codes(qdata, bits, B)
    return codes.reshape(codes.shape[0], -1).to(torch.uint8).view(torch.int8)


def _v4_layer(prefix, qdata, scale, bits, centroids=None, unscaled=False, nibbles=False):
    c = codebook(bits) if centroids is None else centroids
    codes = _seed_codes(qdata, bits)
    if nibbles:  # the seed's half-block order: byte i = code[i] | code[i + B/2] << 4
        blocks = codes.view(torch.uint8).view(codes.shape[0], -1, B)
        codes = (blocks[..., : B // 2] | blocks[..., B // 2 :] << 4).reshape(codes.shape[0], -1)
    tensors = {f"{prefix}.codes": codes, f"{prefix}.norms": scale.clone()}
    if unscaled:
        tensors[f"{prefix}.ct"] = c.clone()
    else:
        tensors[f"{prefix}.ct_scaled"] = c / math.sqrt(B)
    return tensors


def _bitpack_5_big_endian(codes):
    """Codes (any shape, 0..31) -> flat uint8, each code's 5 bits most significant first."""
    bits = (codes.reshape(-1, 1) >> torch.arange(4, -1, -1)) & 1
    bits = F.pad(bits.reshape(-1), (0, -bits.numel() % 40))
    return (bits.view(-1, 8) << torch.arange(7, -1, -1)).sum(-1).to(torch.uint8)


def _q5_layer(prefix, qdata, scale, K, flat=True, meta_dtype=torch.int64):
    codes = unpack_codes(qdata, 5, B)
    N, n_blocks, _ = codes.shape
    packed = _bitpack_5_big_endian(codes)
    if not flat:
        packed = packed.view(N, -1)
    meta = torch.tensor([N, n_blocks, B, codes.numel(), K], dtype=meta_dtype)
    return {
        f"{prefix}.weight__packed": packed,
        f"{prefix}.weight__norms": scale.clone(),
        f"{prefix}.weight__meta": meta,
    }


def _write(path, tensors, config, files=1):
    path.mkdir(parents=True, exist_ok=True)
    (path / "polar_config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    for i in range(files):
        part = {n: tensors[n].contiguous() for n in names[i::files]}
        save_file(part, str(path / f"model-{i + 1:05d}-of-{files:05d}.safetensors"))
    return path


def _perturbed_codebook(bits):
    c = codebook(bits) + 0.05 * torch.randn(2**bits)
    return c.sort().values


# -- loading layers bit-exactly --------------------------------------------------


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("K, K_in_config", [(256, False), (200, True), (200, False)])
def test_v4_standard_codebook_bit_exact(tmp_path, bits, K, K_in_config):
    w = torch.randn(16, K)
    qdata, scale = _quantize(w, bits)
    config = {"format": "polar_engine_v4", "block_size": B, "layers": {"m.proj": {"bits": bits}}}
    if K_in_config:
        config["layers"]["m.proj"].update(in_features=K, out_features=16)
    _write(tmp_path, _v4_layer("m.proj", qdata, scale, bits), config)

    t = load_seed_tensors(tmp_path)["m.proj.weight"]
    K_loaded = K if K_in_config else 256  # v4 stores K only in the config
    assert isinstance(t, HLWQTensor) and t.codebook is None
    assert (t.shape, t.dtype, t.bits, t.block_size) == ((16, K_loaded), torch.bfloat16, bits, B)
    assert torch.equal(t.qdata, qdata) and torch.equal(t.scale, scale)
    expected = dequantize_ref(qdata, scale, bits, B, K_loaded)
    assert torch.equal(t.dequantize(torch.float32), expected)


def test_v4_unscaled_ct_and_bits_from_centroids(tmp_path):
    w = torch.randn(8, 256)
    qdata, scale = _quantize(w, 4)
    # No bit width anywhere in the config: the 16 centroids say bits=4.
    _write(tmp_path, _v4_layer("a", qdata, scale, 4, unscaled=True), {"format": "polar_engine_v4"})
    t = load_seed_tensors(tmp_path, dtype=torch.float32)["a.weight"]
    assert t.bits == 4 and t.codebook is None and t.dtype == torch.float32
    assert torch.equal(t.dequantize(), dequantize_ref(qdata, scale, 4, B, 256))


@pytest.mark.parametrize("bits", [3, 4])
def test_v4_nibble_packed_codes(tmp_path, bits):
    qdata, scale = _quantize(torch.randn(8, 384), bits)
    _write(tmp_path, _v4_layer("a", qdata, scale, bits, nibbles=True), {"format": "polar_engine_v4"})
    t = load_seed_tensors(tmp_path)["a.weight"]
    assert torch.equal(t.qdata, qdata) and torch.equal(t.scale, scale)


@pytest.mark.parametrize("bits", [4, 5, 8])
@pytest.mark.parametrize("unscaled", [False, True])
def test_v4_custom_codebook_is_kept(tmp_path, bits, unscaled):
    c = _perturbed_codebook(bits)
    w = torch.randn(32, 300)
    qdata, scale = _quantize(w, bits, c)
    config = {"format": "polar_engine_v4", "layers": {"a": {"in_features": 300}}}
    _write(tmp_path, _v4_layer("a", qdata, scale, bits, c, unscaled=unscaled), config)

    t = load_seed_tensors(tmp_path, dtype=torch.float32)["a.weight"]
    assert t.codebook is not None and t.codebook.dtype == torch.float32
    if unscaled:
        assert torch.equal(t.codebook, c)
    else:  # ct_scaled * sqrt(B): within a float32 rounding of the centroids
        torch.testing.assert_close(t.codebook, c, rtol=2**-23, atol=0)
    assert torch.equal(t.qdata, qdata) and torch.equal(t.scale, scale)
    assert torch.equal(t.dequantize(), dequantize_ref(qdata, scale, bits, B, 300, codebook=t.codebook))

    x = torch.randn(5, 300)
    reference = x.double() @ dequantize_ref(qdata, scale, bits, B, 300, torch.float64, codebook=c).t()
    assert rel_error(F.linear(x, t), reference) < 1e-5


# -- the seed's codebook -------------------------------------------------------------

# The positive half of the seed's 5-bit centroids, float32, from running the
# seed's procedures with scipy (scipy.stats.norm, as the seed does).
SEED_5BIT_POSITIVE = {
    "hf_integration": [
        0.08777755498886108, 0.26340144872665405, 0.43924325704574585, 0.6154888272285461,
        0.7923916578292847, 0.9703154563903809, 1.1497951745986938, 1.331628441810608,
        1.5170170068740845, 1.7077951431274414, 1.9068132638931274, 2.1186349391937256,
        2.3509275913238525, 2.6176562309265137, 2.948091745376587, 3.4231443405151367,
    ],
    "utils": [
        0.08799214661121368, 0.26406803727149963, 0.4404319226741791, 0.6173215508460999,
        0.795050859451294, 0.9740559458732605, 1.1549614667892456, 1.3386794328689575,
        1.5265623331069946, 1.7206518650054932, 1.9241063594818115, 2.1419918537139893,
        2.382909059524536, 2.662872552871704, 3.016918897628784, 3.5516090393066406,
    ],
}
VARIANTS = list(SEED_5BIT_POSITIVE)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", range(2, 9))
def test_seed_codebook_sorted_symmetric_deterministic(bits, variant):
    c = seed_codebook(bits, variant)
    assert c.dtype == torch.float32 and c.shape == (2**bits,)
    assert bool((c[1:] > c[:-1]).all())
    assert torch.equal(c, -c.flip(0))  # the seed's procedure is symmetric, bit for bit
    c[0] = 0.0  # a new tensor each call: the cache is untouched
    assert torch.equal(seed_codebook(bits, variant), -seed_codebook(bits, variant).flip(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_seed_codebook_5bit_is_the_seeds(variant):
    c = seed_codebook(5, variant)
    assert torch.equal(c[16:], torch.tensor(SEED_5BIT_POSITIVE[variant]))


def test_seed_codebook_5bit_gap_to_lloyd_max():
    """Measured: max |seed - Lloyd-Max| = 0.3314 (hf_integration) / 0.3548 (utils),
    at centroids ~+-1.9..2.1; N(0, 1) MSE 0.002902 / 0.002923 against 0.002505;
    the two variants differ by up to 0.1285 (the outermost centroid: hf_integration
    keeps the ends at +-4)."""
    lloyd = codebook(5)
    hf, utils = seed_codebook(5, "hf_integration"), seed_codebook(5, "utils")
    assert 0.32 < (hf - lloyd).abs().max() < 0.34
    assert 0.35 < (utils - lloyd).abs().max() < 0.36
    assert 0.128 < (hf - utils).abs().max() < 0.129
    assert math.isclose(gaussian_mse(lloyd), 0.0025047, rel_tol=1e-4)
    assert math.isclose(gaussian_mse(hf), 0.0029017, rel_tol=1e-4)
    assert math.isclose(gaussian_mse(utils), 0.0029234, rel_tol=1e-4)


def test_seed_codebook_utils_converges_at_2_bits():
    """With open ends, 100 iterations suffice at 2 bits: the utils variant is Lloyd-Max there;
    hf_integration's ends at +-4 leave it 1.04e-3 off."""
    torch.testing.assert_close(seed_codebook(2, "utils"), codebook(2), rtol=0, atol=1e-6)
    assert 1e-3 < (seed_codebook(2, "hf_integration") - codebook(2)).abs().max() < 1.1e-3


def test_seed_codebook_errors():
    with pytest.raises(ValueError, match="variant"):
        seed_codebook(5, "scipy")
    with pytest.raises(ValueError, match="bits"):
        seed_codebook(9)


# -- hlwq-q5 ------------------------------------------------------------------------

Q5_CODEBOOKS = {  # loader option -> the centroids the test's codes are chosen against
    "seed": lambda: seed_codebook(5, "hf_integration"),
    "seed-utils": lambda: seed_codebook(5, "utils"),
    "lloyd-max": lambda: None,
}


@pytest.mark.parametrize("K", [256, 200])
@pytest.mark.parametrize("flat, meta_dtype", [(True, torch.int64), (False, torch.int32)])
@pytest.mark.parametrize("choice", [None, *Q5_CODEBOOKS])
def test_q5_bit_exact(tmp_path, K, flat, meta_dtype, choice):
    c = Q5_CODEBOOKS[choice or "seed"]()
    w = torch.randn(24, K)
    qdata, scale = _quantize(w, 5, c)
    _write(tmp_path, _q5_layer("m.proj", qdata, scale, K, flat, meta_dtype), {"format": "hlwq-q5"})
    kwargs = {} if choice is None else {"codebook": choice}
    t = load_seed_tensors(tmp_path, **kwargs)["m.proj.weight"]
    assert isinstance(t, HLWQTensor)
    if c is None:
        assert t.codebook is None
    else:
        assert t.codebook.dtype == torch.float32 and torch.equal(t.codebook, c)
    assert (t.shape, t.bits, t.block_size) == ((24, K), 5, B)
    assert torch.equal(t.qdata, qdata) and torch.equal(t.scale, scale)
    assert torch.equal(t.dequantize(torch.float32), dequantize_ref(qdata, scale, 5, B, K, codebook=c))


def test_q5_seed_codes_need_the_seed_codebook(tmp_path):
    """Codes chosen against the seed's codebook, read with ours: relative error
    0.0535 -> 0.200 (measured, randn 256 x 1024), ~14x the squared error."""
    w = torch.randn(256, 1024)
    qdata, scale = _quantize(w, 5, seed_codebook(5))
    _write(tmp_path, _q5_layer("a", qdata, scale, 1024), {"format": "hlwq-q5"})
    seed = load_seed_tensors(tmp_path, dtype=torch.float32)["a.weight"].dequantize()
    ours = load_seed_tensors(tmp_path, dtype=torch.float32, codebook="lloyd-max")["a.weight"].dequantize()
    assert rel_error(seed, w) < 0.056
    assert rel_error(ours, w) > 3.4 * rel_error(seed, w)


def test_big_endian_5bit_unpack_follows_the_seed_formulas():
    b = torch.randint(0, 256, (7, 5), dtype=torch.uint8)
    codes = _unpack_big_endian_5bit(b.reshape(-1), 56).view(7, 8).long()
    b0, b1, b2, b3, b4 = b.long().unbind(-1)
    assert torch.equal(codes[:, 0], b0 >> 3)
    assert torch.equal(codes[:, 1], (b0 & 7) << 2 | b1 >> 6)
    assert torch.equal(codes[:, 2], (b1 >> 1) & 31)
    assert torch.equal(codes[:, 3], (b1 & 1) << 4 | b2 >> 4)
    assert torch.equal(codes[:, 4], (b2 & 15) << 1 | b3 >> 7)
    assert torch.equal(codes[:, 5], (b3 >> 2) & 31)
    assert torch.equal(codes[:, 6], (b3 & 3) << 3 | b4 >> 5)
    assert torch.equal(codes[:, 7], b4 & 31)


def test_several_files_and_plain_tensors_ignored(tmp_path):
    tensors = {"embed.weight": torch.randn(4, 8)}
    layers = {}
    for i, bits in enumerate([3, 5, 6]):
        qdata, scale = _quantize(torch.randn(8, 256), bits)
        tensors.update(_v4_layer(f"l{i}", qdata, scale, bits))
        layers[f"l{i}.weight"] = (qdata, bits)
    _write(tmp_path, tensors, {"format": "polar_engine_v4", "bit_assignment": {"l1": 5}}, files=3)
    out = load_seed_tensors(tmp_path)
    assert sorted(out) == sorted(layers)
    for name, (qdata, bits) in layers.items():
        assert out[name].bits == bits and torch.equal(out[name].qdata, qdata)


# -- loading into models ---------------------------------------------------------


def _mlp():
    return nn.Sequential(nn.Linear(200, 64), nn.ReLU(), nn.Linear(64, 48))


def _seed_checkpoint(model, path, fmt, bits=5, custom=()):
    """Quantize every nn.Linear of ``model`` into a seed checkpoint; return the
    model with the dequantized weights (the reference)."""
    tensors, layers = {}, {}
    reference = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        c = _perturbed_codebook(bits) if name in custom else None
        if fmt == "hlwq-q5":
            c = seed_codebook(5)
        qdata, scale = _quantize(module.weight.detach(), bits, c)
        if fmt == "hlwq-q5":
            tensors.update(_q5_layer(name, qdata, scale, module.in_features))
        else:
            tensors.update(_v4_layer(name, qdata, scale, bits, c))
            layers[name] = {"bits": bits}
        reference[f"{name}.weight"] = dequantize_ref(qdata, scale, bits, B, module.in_features, codebook=c)
    for name, value in model.state_dict().items():
        if name not in reference:
            tensors[name] = value.clone()
    config = {"format": fmt, "block_size": B}
    if layers:
        config["layers"] = layers
    _write(path, tensors, config)
    model.load_state_dict({**model.state_dict(), **reference})
    return model


@pytest.mark.parametrize("fmt", ["polar_engine_v4", "hlwq-q5"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_load_seed_into_sequential(tmp_path, fmt, device):
    reference = _seed_checkpoint(_mlp(), tmp_path, fmt, custom={"2"} if fmt != "hlwq-q5" else ())
    with torch.device(device):
        model = _mlp()
    names = load_seed_into(model, tmp_path)
    assert sorted(names) == sorted(reference.state_dict())
    for linear in (model[0], model[2]):
        assert isinstance(linear.weight, nn.Parameter) and isinstance(linear.weight.data, HLWQTensor)
        assert not linear.weight.requires_grad and linear.weight.device.type == "cpu"
    assert model[2].weight.codebook is not None  # v4: the stored custom centroids; q5: the seed's
    assert (model[0].weight.codebook is None) == (fmt != "hlwq-q5")
    if fmt == "hlwq-q5":
        assert torch.equal(model[0].weight.codebook, seed_codebook(5))
        assert model[0].weight.codebook.data_ptr() != model[2].weight.codebook.data_ptr()
    x = torch.randn(6, 200)
    with torch.no_grad():
        assert rel_error(model(x), reference(x)) < 1e-5


@pytest.mark.parametrize("strict", [True, False])
def test_a_plain_checkpoint_tensor_replaces_a_weight_quantized_before_loading(tmp_path, strict):
    """A model quantized before loading (quantize_ takes every nn.Linear) and a checkpoint that keeps a linear's
    weight plain: that weight is the checkpoint's, plain. It failed in a bare TypeError (an HLWQTensor takes no
    copy_) after the layers before it had been put in, strict or not."""
    source = _mlp()
    qdata, scale = _quantize(source[0].weight.detach(), 5)
    tensors = {**_v4_layer("0", qdata, scale, 5), "0.bias": source[0].bias.detach().clone(),
               **{f"2.{n}": t.detach().clone() for n, t in source[2].named_parameters()}}
    _write(tmp_path, tensors, {"format": "polar_engine_v4", "block_size": B, "layers": {"0": {"bits": 5}}})
    model = _mlp()
    for linear in model[0], model[2]:
        linear.weight = nn.Parameter(HLWQTensor.from_hp(linear.weight.detach(), 5), requires_grad=False)
    assert sorted(load_seed_into(model, tmp_path, strict=strict)) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert type(model[2].weight) is nn.Parameter and torch.equal(model[2].weight, source[2].weight)
    source[0].weight.data = dequantize_ref(qdata, scale, 5, B, 200)
    x = torch.randn(3, 200)
    with torch.no_grad():
        assert rel_error(model(x), source(x)) < 1e-5


@pytest.mark.parametrize("fmt", ["polar_engine_v4", "hlwq-q5"])
def test_load_seed_into_lloyd_max_option(tmp_path, fmt):
    """codebook="lloyd-max" gives hlwq-q5 layers the standard codebook; v4 keeps its stored centroids."""
    _seed_checkpoint(_mlp(), tmp_path, fmt, custom={"2"} if fmt != "hlwq-q5" else ())
    model = _mlp()
    load_seed_into(model, tmp_path, codebook="lloyd-max")
    assert model[0].weight.codebook is None
    assert (model[2].weight.codebook is None) == (fmt == "hlwq-q5")
    default = _mlp()
    load_seed_into(default, tmp_path)
    assert torch.equal(model[0].weight.qdata, default[0].weight.qdata)


def test_codebook_option_errors(tmp_path):
    path = _q5_case(tmp_path)
    with pytest.raises(ValueError, match="codebook must be one of"):
        load_seed_tensors(path, codebook="lloyd")
    with pytest.raises(ValueError, match="codebook must be one of"):
        load_seed_into(_linear_model(in_features=200), path, codebook=None)


def _tiny_llama(tie):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96,
        hidden_size=128,
        intermediate_size=320,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_load_seed_into_tiny_llama(tmp_path, tie):
    """Mixed bits, one custom codebook; with tied embeddings the seed's quantized
    embedding is dequantized into the (shared) embedding weight."""
    source = _tiny_llama(tie)
    tensors, layers, expected = {}, {}, {}
    for name, module in source.named_modules():
        is_embedding = isinstance(module, nn.Embedding)
        if not (isinstance(module, nn.Linear) or is_embedding) or (tie and name == "lm_head"):
            continue
        if is_embedding and not tie:
            continue
        bits = 6 if "o_proj" in name else 4 if "down_proj" in name else 5
        c = _perturbed_codebook(bits) if name.endswith("layers.1.self_attn.q_proj") else None
        w = module.weight.detach()
        qdata, scale = _quantize(w, bits, c)
        tensors.update(_v4_layer(name, qdata, scale, bits, c))
        layers[name] = {"bits": bits, "in_features": w.shape[1], "out_features": w.shape[0]}
        expected[f"{name}.weight"] = dequantize_ref(qdata, scale, bits, B, w.shape[1], codebook=c)
    for name, value in source.state_dict().items():
        if name not in expected and not (tie and name == "lm_head.weight"):
            tensors[name] = value.clone()
    _write(tmp_path, tensors, {"format": "polar_engine_v4", "layers": layers}, files=2)
    source.load_state_dict({**source.state_dict(), **expected})

    model = _tiny_llama(tie)  # a different random init
    names = load_seed_into(model, tmp_path)
    assert set(expected) <= set(names)
    q = model.model.layers[1].self_attn.q_proj.weight
    assert isinstance(q.data, HLWQTensor) and q.codebook is not None
    assert model.model.layers[0].mlp.down_proj.weight.bits == 4
    if tie:
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert not isinstance(model.lm_head.weight.data, HLWQTensor)
    ids = torch.randint(0, 96, (2, 9))
    with torch.no_grad():
        assert rel_error(model(ids).logits, source(ids).logits) < 1e-4


def test_load_seed_into_quantized_lm_head_unties_embed_tokens(tmp_path, caplog):
    """In a tied model a quantized lm_head becomes a tensor of its own: embed_tokens, which held the
    same tensor, is not loaded through the tie; strict mode names it until the checkpoint holds it."""
    source = _tiny_llama(tie=True)
    tensors = {}
    for name, module in source.named_modules(remove_duplicate=False):
        if isinstance(module, nn.Linear):
            tensors.update(_v4_layer(name, *_quantize(module.weight.detach(), 5), 5))
    for name, value in source.state_dict().items():
        if name not in ("lm_head.weight", "model.embed_tokens.weight") and not name.endswith("_proj.weight"):
            tensors[name] = value.clone()
    _write(tmp_path / "no_embed", tensors, {"format": "polar_engine_v4"})
    missing = r"1 model tensor\(s\) not in the checkpoint, e.g. \['model.embed_tokens.weight'\]"
    with pytest.raises(ValueError, match=missing):
        load_seed_into(_tiny_llama(tie=True), tmp_path / "no_embed")
    model = _tiny_llama(tie=True)
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.seed"):
        names = load_seed_into(model, tmp_path / "no_embed", strict=False)
    assert "model.embed_tokens.weight" in caplog.text and "model.embed_tokens.weight" not in names
    assert isinstance(model.lm_head.weight.data, HLWQTensor)
    assert model.lm_head.weight is not model.model.embed_tokens.weight

    tensors["model.embed_tokens.weight"] = source.model.embed_tokens.weight.detach().clone()
    _write(tmp_path / "both", tensors, {"format": "polar_engine_v4"})
    model = _tiny_llama(tie=True)
    assert set(load_seed_into(model, tmp_path / "both")) == set(source.state_dict())
    assert torch.equal(model.model.embed_tokens.weight, source.model.embed_tokens.weight)


def test_loaded_model_saves_and_loads_weights_only(tmp_path):
    reference = _seed_checkpoint(_mlp(), tmp_path, "polar_engine_v4")
    model = _mlp()
    load_seed_into(model, tmp_path)
    assert model[0].weight.codebook is None
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert isinstance(state["0.weight"], HLWQTensor)
    assert torch.equal(state["0.weight"].qdata, model[0].weight.qdata)

    fresh = _mlp()
    load_seed_into(fresh, tmp_path)
    for linear in (fresh[0], fresh[2]):
        linear.weight.qdata.zero_()
    fresh.load_state_dict(state)
    x = torch.randn(3, 200)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
        assert rel_error(fresh(x), reference(x)) < 1e-5


# -- errors ------------------------------------------------------------------------


def _v4_case(tmp_path, mutate_tensors=None, mutate_config=None, bits=5, K=256):
    qdata, scale = _quantize(torch.randn(8, K), bits)
    tensors = _v4_layer("a", qdata, scale, bits)
    tensors["extra.weight"] = torch.randn(3)
    config = {"format": "polar_engine_v4", "layers": {"a": {"bits": bits}}}
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_config:
        mutate_config(config)
    return _write(tmp_path, tensors, config)


def _q5_case(tmp_path, mutate_tensors=None, mutate_config=None, K=200):
    qdata, scale = _quantize(torch.randn(8, K), 5)
    tensors = _q5_layer("a", qdata, scale, K)
    config = {"format": "hlwq-q5"}
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_config:
        mutate_config(config)
    return _write(tmp_path, tensors, config)


def _set_code(t, value):
    t["a.codes"][3, 7] = value


V4_ERRORS = {
    "unknown format": (None, lambda c: c.update(format="polar_engine_v5"), "unknown format 'polar_engine_v5'"),
    "no format": (None, lambda c: c.pop("format"), "'format' key"),
    "missing norms": (lambda t: t.pop("a.norms"), None, r"missing tensor\(s\) \['a.norms'\]"),
    "missing centroids": (lambda t: t.pop("a.ct_scaled"), None, "missing tensor a.ct_scaled"),
    "listed layer absent": (None, lambda c: c["layers"].update(b={"bits": 5}), r"layer b is missing"),
    "codes shape": (lambda t: t.update({"a.codes": t["a.codes"][:, :200]}), None, r"expected \(8, 256\) int8"),
    "codes dtype": (lambda t: t.update({"a.codes": t["a.codes"].long()}), None, "found torch.int64"),
    "norms rows": (lambda t: t.update({"a.norms": t["a.norms"][:4]}), None, r"expected \(4, 256\)"),
    "code too big": (lambda t: _set_code(t, 32), None, "codes must be in 0..31 for bits=5, found 32"),
    "code negative": (lambda t: _set_code(t, -3), None, "codes must be in 0..31 for bits=5, found 253"),
    "centroid count": (lambda t: t.update({"a.ct_scaled": t["a.ct_scaled"][:31]}), None, "found 31 centroids"),
    "centroids unsorted": (lambda t: t.update({"a.ct_scaled": t["a.ct_scaled"].flip(0)}), None, "sorted ascending"),
    "centroids nan": (lambda t: t["a.ct_scaled"].__setitem__(4, float("nan")), None, "centroids must be finite"),
    "ct disagrees": (lambda t: t.update({"a.ct": codebook(5) * 1.01}), None, "disagree"),
    "ct integer": (lambda t: t.update({"a.ct": torch.arange(-16, 16, dtype=torch.int32)}), None,
                   r"a.ct: expected float centroids, found torch.int32"),
    "ct_scaled integer": (lambda t: t.update({"a.ct_scaled": torch.arange(32, dtype=torch.int16)}), None,
                          r"a.ct_scaled: expected float centroids, found torch.int16"),
    "config bits": (None, lambda c: c["layers"]["a"].update(bits=4), "says bits=4, found 32 centroids"),
    "norms nan": (lambda t: t["a.norms"].__setitem__((2, 1), float("nan")), None, "finite and >= 0, found nan"),
    "norms dtype": (lambda t: t.update({"a.norms": t["a.norms"].float()}), None, "expected 2-D float16 norms"),
    "out_features": (None, lambda c: c["layers"]["a"].update(out_features=9), "out_features=9, the tensors hold 8"),
    "in_features": (None, lambda c: c["layers"]["a"].update(in_features=100), r"in_features 100 .* 129..256"),
    "in_features 0": (None, lambda c: c["layers"]["a"].update(in_features=0), r"in_features must be positive, found 0"),
    "weight also plain": (
        lambda t: t.update({"a.weight": torch.randn(8, 256)}),
        None,
        r"layer a's weight is stored both quantized \(\['a.codes', 'a.ct_scaled', 'a.norms'\]\) and plain \(a.weight\)",
    ),
    "block size": (None, lambda c: c.update(block_size=96), "a: polar_config.json's block_size: .*power of two"),
    "no blocks": (lambda t: t.update({"a.codes": t["a.codes"][:, :0], "a.norms": t["a.norms"][:, :0]}), None,
                  r"a.norms: expected 2-D float16 norms of at least one block a row, found .* \(8, 0\)"),
}


@pytest.mark.parametrize("case", list(V4_ERRORS))
def test_v4_errors(tmp_path, case):
    mutate_tensors, mutate_config, message = V4_ERRORS[case]
    path = _v4_case(tmp_path, mutate_tensors, mutate_config)
    with pytest.raises(ValueError, match=message):
        load_seed_tensors(path)


def _q5_meta(t, i, value):
    t["a.weight__meta"][i] = value


Q5_ERRORS = {
    "meta size": (lambda t: t.update({"a.weight__meta": t["a.weight__meta"][:4]}), None, "expected 5 integers"),
    "meta total": (lambda t: _q5_meta(t, 3, 2000), None, "total_codes=2000, expected .* 2048"),
    "meta rows": (lambda t: _q5_meta(t, 0, 9), None, r"expected shape \(9, 2\) from weight__meta, found \(8, 2\)"),
    "meta K": (lambda t: _q5_meta(t, 4, 300), None, r"in_features 300 .* 129..256"),
    "packed length": (lambda t: t.update({"a.weight__packed": t["a.weight__packed"][:-5]}), None, "expected 1280"),
    "packed dtype": (lambda t: t.update({"a.weight__packed": t["a.weight__packed"].to(torch.int16)}), None, "int16"),
    "missing meta": (lambda t: t.pop("a.weight__meta"), None, r"missing tensor\(s\) \['a.weight__meta'\]"),
    "norms inf": (lambda t: t["a.weight__norms"].__setitem__((0, 0), float("inf")), None, "found inf"),
    "norms negative": (lambda t: t["a.weight__norms"].__setitem__((0, 1), -1.0), None, "found -1.0"),
    "config bits": (None, lambda c: c.update(bits=4), "stores 5-bit codes, polar_config.json says bits=4"),
    "config block": (None, lambda c: c.update(block_size=64), "block_size=64, weight__meta says 128"),
    "meta block": (lambda t: _q5_meta(t, 2, 16), None, "a: weight__meta's block_size: .*power of two .* got 16"),
    "weight also plain": (lambda t: t.update({"a.weight": torch.randn(8, 200)}), None, "a's weight is stored both"),
}


@pytest.mark.parametrize("case", list(Q5_ERRORS))
def test_q5_errors(tmp_path, case):
    mutate_tensors, mutate_config, message = Q5_ERRORS[case]
    path = _q5_case(tmp_path, mutate_tensors, mutate_config)
    with pytest.raises(ValueError, match=message):
        load_seed_tensors(path)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="polar_config.json"):
        load_seed_tensors(tmp_path)
    (tmp_path / "polar_config.json").write_text(json.dumps({"format": "hlwq-q5"}))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_seed_tensors(tmp_path)
    path = _v4_case(tmp_path / "dup")
    save_file({"a.norms": torch.zeros(8, 2, dtype=torch.float16)}, str(path / "other.safetensors"))
    with pytest.raises(ValueError, match="'a.norms' is stored in more than one"):
        load_seed_tensors(path)
    for dtype in (torch.int8, torch.float64):  # what an HLWQTensor's linear runs in, and only that is offered
        with pytest.raises(TypeError, match=r"dtype must be one of \(torch.float16, torch.bfloat16, torch.float32\)"):
            load_seed_tensors(_v4_case(tmp_path / "ok"), dtype=dtype)


@pytest.mark.parametrize(
    "configured, stored, message",
    [
        ("polar_engine_v4", "hlwq-q5", r"found tensors with the hlwq-q5 suffixes \(e.g. \['a.weight__meta'"),
        ("hlwq-q5", "polar_engine_v4", r"found tensors with the polar_engine_v4 suffixes \(e.g. \['a.codes'"),
        ("hlwq-q5", "plain", r"no quantized layer found: .* found only 1 plain tensor\(s\), e.g. \['a.weight'\]"),
    ],
    ids=["q5 tensors, v4 config", "v4 tensors, q5 config", "plain tensors only"],
)
def test_format_must_match_the_tensors(tmp_path, configured, stored, message):
    """Tensors not in the configured format are no layer of it: said, not loaded as an empty checkpoint."""
    qdata, scale = _quantize(torch.randn(8, 256), 5)
    tensors = {
        "polar_engine_v4": lambda: _v4_layer("a", qdata, scale, 5),
        "hlwq-q5": lambda: _q5_layer("a", qdata, scale, 256),
        "plain": lambda: {"a.weight": torch.randn(8, 256)},
    }[stored]()
    path = _write(tmp_path, tensors, {"format": configured})
    message = f"{path}: polar_config.json says format {configured}, {message}"
    with pytest.raises(ValueError, match=message):
        load_seed_tensors(path)
    with pytest.raises(ValueError, match=message):
        load_seed_into(nn.Sequential(nn.Linear(256, 8, bias=False)), path)


def test_damaged_files_are_named(tmp_path):
    path = _v4_case(tmp_path / "cut")
    (shard,) = path.glob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:-50])
    with pytest.raises(ValueError, match=f"{shard}: cannot read it as safetensors"):
        load_seed_tensors(path)
    path = _v4_case(tmp_path / "config")
    (path / "polar_config.json").write_text('{"format": "polar_engine_v4",')
    with pytest.raises(ValueError, match=f"{path / 'polar_config.json'}: expected a JSON object, found invalid JSON"):
        load_seed_tensors(path)


def _linear_model(out_features=8, in_features=256):
    model = nn.Module()
    model.a = nn.Linear(in_features, out_features, bias=False)
    model.extra = nn.Module()
    model.extra.register_buffer("weight", torch.zeros(3))
    return model


INTO_ERRORS = {
    "no module": (lambda: nn.Module(), "quantized layer a.weight has no matching parameter or buffer"),
    "rows": (lambda: _linear_model(out_features=9), "a.weight: checkpoint has 8 output rows, model expects 9"),
    "in_features": (lambda: _linear_model(in_features=100), r"a.weight: in_features 100 .* expected 129..256"),
    "unexpected": (lambda: _drop_extra(_linear_model()), "extra.weight has no matching parameter or buffer"),
    "missing": (lambda: _add_param(_linear_model()), r"1 model tensor\(s\) not in the checkpoint, e.g. \['b'\]"),
    "plain shape": (lambda: _wrong_extra(_linear_model()), r"extra.weight: checkpoint has shape \(3,\), model expects"),
}


def _drop_extra(model):
    del model.extra
    return model


def _add_param(model):
    model.b = nn.Parameter(torch.zeros(2))
    return model


def _wrong_extra(model):
    model.extra.weight = torch.zeros(4)
    return model


@pytest.mark.parametrize("case", list(INTO_ERRORS))
def test_load_seed_into_strict_errors(tmp_path, case, caplog):
    build, message = INTO_ERRORS[case]
    path = _v4_case(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_seed_into(build(), path)
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.seed"):
        names = load_seed_into(build(), path, strict=False)
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert len(names) < 2 or case == "missing"


@pytest.mark.parametrize("case", [c for c in INTO_ERRORS if c != "in_features"])
def test_load_seed_into_strict_errors_leave_the_model(tmp_path, case):
    """What the names and the headers' shapes show is found before anything is put in the model."""
    build, message = INTO_ERRORS[case]
    model = build()
    before = {name: (t, t.clone()) for name, t in [*model.named_parameters(), *model.named_buffers()]}
    with pytest.raises(ValueError, match=message) as info:
        load_seed_into(model, _v4_case(tmp_path))
    assert "the model is left as it was" in str(info.value)
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert after.keys() == before.keys()
    assert all(after[n] is t and torch.equal(t, copy) for n, (t, copy) in before.items())


def test_load_seed_into_a_module_with_two_names(tmp_path):
    """One linear registered under two names (models that reuse a block): both names hold the loaded weight."""
    model = _linear_model()
    model.alias = model.a
    assert set(load_seed_into(model, _v4_case(tmp_path))) == {"a.weight", "extra.weight"}
    assert isinstance(model.alias.weight.data, HLWQTensor)


def test_load_seed_into_checks_a_non_linear_targets_rows_first(tmp_path):
    """A quantized layer bound for a tensor that is not a linear's weight (an embedding, dequantized there) with
    other rows: found before the model changes, as for a linear."""
    tensors = {}
    for prefix in ("a", "b"):
        tensors.update(_v4_layer(prefix, *_quantize(torch.randn(8, 256), 4), 4))
    path = _write(tmp_path, tensors, {"format": "polar_engine_v4"})
    model = nn.Module()
    model.a, model.b = nn.Linear(256, 8, bias=False), nn.Embedding(9, 256)
    with pytest.raises(ValueError, match=r"left as it was: .*b.weight: checkpoint has 8 output rows, model expects 9"):
        load_seed_into(model, path)
    assert not isinstance(model.a.weight.data, HLWQTensor)


def test_load_seed_into_says_when_the_model_is_partly_loaded(tmp_path):
    """A layer that proves bad only once read (codes out of range here), after another was put in."""
    tensors = {}
    for prefix in ("a", "b"):
        tensors.update(_v4_layer(prefix, *_quantize(torch.randn(8, 256), 4), 4))
    tensors["b.codes"][0, 0] = 16
    path = _write(tmp_path, tensors, {"format": "polar_engine_v4"})
    model = nn.Module()
    model.a, model.b = nn.Linear(256, 8, bias=False), nn.Linear(256, 8, bias=False)
    with pytest.raises(ValueError, match=r"codes must be in 0..15 .*\(the model is partly loaded: 1 tensor\(s\)"):
        load_seed_into(model, path)
    assert isinstance(model.a.weight.data, HLWQTensor) and not isinstance(model.b.weight.data, HLWQTensor)


def test_load_seed_into_checks_linear_dtypes_first(tmp_path, caplog):
    """A linear whose weight dtype an HLWQTensor cannot take (float64): found before the model changes, named;
    skipped with strict=False."""
    tensors = {}
    for prefix in ("a", "b"):
        tensors.update(_v4_layer(prefix, *_quantize(torch.randn(8, 256), 4), 4))
    path = _write(tmp_path, tensors, {"format": "polar_engine_v4"})
    model = nn.Module()
    model.a, model.b = nn.Linear(256, 8, bias=False), nn.Linear(256, 8, bias=False).double()
    message = (
        r"left as it was: 1 problem\(s\): b.weight: the model's weight is torch.float64, "
        r"a quantized linear's must be one of \(torch.float16, torch.bfloat16, torch.float32\)"
    )
    with pytest.raises(ValueError, match=message):
        load_seed_into(model, path)
    assert not isinstance(model.a.weight.data, HLWQTensor)
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.seed"):
        assert load_seed_into(model, path, strict=False) == ["a.weight"]
    assert "b.weight: the model's weight is torch.float64" in caplog.text
    assert model.b.weight.dtype == torch.float64 and not isinstance(model.b.weight.data, HLWQTensor)


def test_load_seed_into_in_features_from_config_must_match(tmp_path):
    path = _v4_case(tmp_path, mutate_config=lambda c: c["layers"]["a"].update(in_features=250))
    with pytest.raises(ValueError, match="checkpoint has in_features=250, model expects 256"):
        load_seed_into(_linear_model(), path)
