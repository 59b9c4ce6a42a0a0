"""hlwq_ops.quantize: a checkpoint quantized tensor by tensor loads like one quantized in memory."""

import gc
import json
import logging
import re
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchao.quantization import quantize_
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, TorchAoConfig

import hlwq_ops.quantize as hq
from hlwq_ops import HLWQTensor, hlwq

PROMPT = torch.tensor([[1, 5, 9, 3, 7]])
SHARD = "60KB"  # the tiny bf16 model is ~0.7 MB: several shards in and out


def save_tiny_llama(path: Path, *, tie: bool = False, max_shard_size: str | None = None) -> Path:
    """A random 2-layer bf16 Llama (hidden 128, mlp 256, vocab 256) saved with save_pretrained."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    (path / "tokenizer_config.json").write_text("{}\n")
    return path


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama") / "bf16")


@pytest.fixture(scope="module")
def sharded_src(tmp_path_factory) -> Path:
    path = save_tiny_llama(tmp_path_factory.mktemp("llama") / "bf16-sharded", max_shard_size=SHARD)
    assert (path / hq.INDEX_NAME).is_file()
    return path


def run(model: Path, out: Path, *args: str) -> Path:
    assert hq.main(["--model", str(model), "--out", str(out), "--device", "cpu", *args]) == 0
    return out


def reference(src: Path, bits: int, block_size: int, scale_mode: str, bits_for=(), include_lm_head=False):
    """The bf16 model quantized in memory with quantize_, the rules written out independently."""
    model = AutoModelForCausalLM.from_pretrained(src)
    wanted = {}
    for fqn, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (fqn != "lm_head" or include_lm_head):
            wanted[fqn] = next((b for p, b in bits_for if re.fullmatch(p, fqn)), bits)
    for b in sorted(set(wanted.values())):
        config = hlwq(bits=b, block_size=block_size, scale_mode=scale_mode)
        quantize_(model, config, filter_fn=lambda m, fqn, b=b: wanted.get(fqn) == b)
    return model


def stored_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    return tensors


def headers(path: Path) -> list[dict]:
    out = []
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            out.append(f.metadata())
    return out


CASES = {
    # id: (CLI args, bits, block_size, scale_mode, bits_for, include_lm_head)
    "default": ([], 5, 128, "search", [], False),
    "bits-for": (
        ["--bits", "4", "--scale-mode", "norm", "--bits-for", ".*down_proj=6", "--bits-for", r"model\.layers\.0\..*=3"],
        4,
        128,
        "norm",
        [(r".*down_proj", 6), (r"model\.layers\.0\..*", 3)],
        False,
    ),
    "block-256": (["--block-size", "256", "--scale-mode", "lsq"], 5, 256, "lsq", [], False),
    "lm-head": (["--include-lm-head", "--bits", "3", "--scale-mode", "norm"], 3, 128, "norm", [], True),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_loads_like_in_memory_quantize(src, tmp_path, caplog, case):
    args, bits, block_size, scale_mode, bits_for, include_lm_head = CASES[case]
    with caplog.at_level(logging.INFO, logger="hlwq_ops.quantize"):
        out = run(src, tmp_path / "q", *args)
    expected = reference(src, bits, block_size, scale_mode, bits_for, include_lm_head)
    loaded = AutoModelForCausalLM.from_pretrained(out)

    n_quantized = 0
    want = dict(expected.named_parameters())
    for name, got in loaded.named_parameters():
        ref = want[name]
        assert type(got) is type(ref), f"{name}: {type(got).__name__}, in memory {type(ref).__name__}"
        if isinstance(ref, HLWQTensor):
            n_quantized += 1
            assert (got.bits, got.block_size, got.dtype) == (ref.bits, ref.block_size, ref.dtype), name
            assert torch.equal(got.qdata, ref.qdata) and torch.equal(got.scale, ref.scale), name
        else:
            assert torch.equal(got, ref), name
    torch.testing.assert_close(loaded(PROMPT).logits, expected(PROMPT).logits, rtol=0, atol=0)
    generate = dict(max_new_tokens=8, do_sample=False)
    assert torch.equal(loaded.generate(PROMPT, **generate), expected.generate(PROMPT, **generate))

    layers = loaded.model.layers
    if case == "default":
        assert n_quantized == 14 and not isinstance(loaded.lm_head.weight, HLWQTensor)
        assert "not quantizing lm_head.weight: it is the output embedding" in caplog.text
    if case == "bits-for":  # first match wins: layer 0's down_proj is 6 bits, not 3
        assert [layers[0].mlp.down_proj.weight.bits, layers[0].self_attn.q_proj.weight.bits] == [6, 3]
        assert [layers[1].mlp.down_proj.weight.bits, layers[1].self_attn.q_proj.weight.bits] == [6, 4]
    if case == "block-256":  # only down_proj has in_features >= 256
        assert n_quantized == 2 and layers[1].mlp.down_proj.weight.block_size == 256
        assert "model.layers.0.self_attn.q_proj.weight: in_features=128 is smaller than one block (256)" in caplog.text
    if case == "lm-head":
        assert n_quantized == 15 and loaded.lm_head.weight.bits == 3
    assert "not quantizing model.embed_tokens.weight: its module is a Embedding" in caplog.text


def test_config_round_trips(src, tmp_path):
    out = run(src, tmp_path / "q", "--bits-for", ".*o_proj=7", "--scale-mode", "norm")
    written = json.loads((out / "config.json").read_text())["quantization_config"]
    config = TorchAoConfig.from_dict(written)
    assert json.loads(json.dumps(config.to_dict())) == written
    fqns = config.quant_type.fqn_to_config
    assert len(fqns) == 14 and fqns["model.layers.1.self_attn.o_proj"] == hlwq(bits=7, scale_mode="norm")
    assert fqns["model.layers.1.mlp.up_proj"] == hlwq(bits=5, scale_mode="norm")
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()

    plain = json.loads((run(src, tmp_path / "q2", "--bits", "6") / "config.json").read_text())
    assert plain["quantization_config"] == json.loads(json.dumps(TorchAoConfig(quant_type=hlwq(bits=6)).to_dict()))


def test_matches_transformers_save_pretrained(sharded_src, tmp_path):
    """Same tensors, header metadata, index and config as save_pretrained of a model quantized on load."""
    ours = run(sharded_src, tmp_path / "ours", "--scale-mode", "norm", "--max-shard-size", SHARD)
    config = TorchAoConfig(quant_type=hlwq(scale_mode="norm"))
    model = AutoModelForCausalLM.from_pretrained(sharded_src, quantization_config=config)
    model.save_pretrained(tmp_path / "theirs", max_shard_size=SHARD)
    theirs = tmp_path / "theirs"

    a, b = stored_tensors(ours), stored_tensors(theirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ours_meta, theirs_meta = headers(ours), headers(theirs)
    assert len(ours_meta) > 1 and all(m == ours_meta[0] for m in ours_meta)  # the whole model in every shard
    names = json.loads(ours_meta[0]["tensor_names"])
    assert sorted(names) == sorted(json.loads(theirs_meta[0]["tensor_names"]))
    for name in names:
        assert json.loads(ours_meta[0][name]) == json.loads(theirs_meta[0][name]), name
    assert json.loads(ours_meta[0]["model.layers.0.mlp.up_proj.weight"]) == {
        "_type": "HLWQTensor",
        "_data": {
            "transposed": False,
            "bits": 5,
            "block_size": 128,
            "shape": [256, 128],
            "dtype": {"_type": "torch.dtype", "_data": "bfloat16"},
        },
        "_tensor_data_names": ["qdata", "scale"],
    }
    assert json.loads(ours_meta[0]["model.norm.weight"]) == {"_type": "Tensor"} and ours_meta[0]["format"] == "pt"

    index = json.loads((ours / hq.INDEX_NAME).read_text())
    their_index = json.loads((theirs / hq.INDEX_NAME).read_text())
    assert index["weight_map"].keys() == their_index["weight_map"].keys() == a.keys()
    assert index["metadata"] == their_index["metadata"]
    for key, file in index["weight_map"].items():
        with safe_open(ours / file, framework="pt") as f:
            assert key in f.keys()
    for path in ours.glob("*.safetensors"):  # no shard exceeds --max-shard-size but a lone large tensor
        with safe_open(path, framework="pt") as f:
            sizes = [f.get_tensor(k).nbytes for k in f.keys()]
        assert len(sizes) == 1 or sum(sizes) <= hq.parse_size(SHARD), (path.name, sizes)
    config_ours = json.loads((ours / "config.json").read_text())["quantization_config"]
    assert config_ours == json.loads((theirs / "config.json").read_text())["quantization_config"]


def test_sharded_input_and_entry_point(src, sharded_src, tmp_path):
    """``python -m hlwq_ops.quantize`` on sharded input writes what main() writes for one file."""
    args = ["--device", "cpu", "--scale-mode", "norm", "--bits-for", ".*gate_proj=2"]
    cmd = [sys.executable, "-m", "hlwq_ops.quantize", "--model", str(sharded_src), "--out", str(tmp_path / "a")]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "hlwq: not quantizing lm_head.weight" in proc.stderr and "hlwq: quantizing 14 of 21 tensors" in proc.stderr
    run(src, tmp_path / "b", *args[2:])

    a, b = stored_tensors(tmp_path / "a"), stored_tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "a" / hq.INDEX_NAME).exists()  # 5GB shards: one output file
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert loaded.model.layers[1].mlp.gate_proj.weight.bits == 2
    assert loaded.model.layers[1].mlp.up_proj.weight.bits == 5


def test_reads_one_tensor_at_a_time(sharded_src, tmp_path, monkeypatch):
    """When a tensor is read, no earlier source tensor is alive except the ones stored unchanged."""
    live, read = [], []

    def counting_read(f, name):
        gc.collect()
        alive = [n for n, ref in live if ref() is not None and n.endswith("_proj.weight")]
        assert not alive, f"reading {name} while {alive} are still in memory"
        tensor = f.get_tensor(name)
        live.append((name, weakref.ref(tensor)))
        read.append(name)
        return tensor

    monkeypatch.setattr(hq, "read_tensor", counting_read)
    run(sharded_src, tmp_path / "q", "--scale-mode", "norm", "--max-shard-size", SHARD)
    assert len(read) == 21 and len(set(read)) == 21


def test_error_midway_leaves_out_as_it_was(sharded_src, tmp_path, capsys):
    """A NaN weight in a later shard: a usage error naming it, --out (new, or existing with other files)
    as it was, nothing left beside it; once the input is fixed, the same --out takes the checkpoint."""
    src = shutil.copytree(sharded_src, tmp_path / "src")
    name = "model.layers.1.mlp.down_proj.weight"
    file = src / json.loads((src / hq.INDEX_NAME).read_text())["weight_map"][name]
    tensors = load_file(file)
    clean = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    save_file(tensors, file, metadata={"format": "pt"})
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    args = ["--scale-mode", "norm", "--max-shard-size", SHARD]

    for out in (tmp_path / "q", existing):
        with pytest.raises(SystemExit) as exc:
            hq.main(["--model", str(src), "--out", str(out), "--device", "cpu", *args])
        assert exc.value.code == 2
        assert f"{name} in {file}: cannot quantize: weight has NaN or Inf" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "src"]
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]

    tensors[name] = clean
    save_file(tensors, file, metadata={"format": "pt"})
    for out in (tmp_path / "q", existing):
        run(src, out, *args)
        assert len(list(out.glob("*.safetensors"))) > 1 and (out / hq.INDEX_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "q", "src"]
    assert (existing / "notes.txt").read_text() == "mine\n"
    a, b = stored_tensors(tmp_path / "q"), stored_tensors(existing)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert isinstance(AutoModelForCausalLM.from_pretrained(existing).model.layers[1].mlp.down_proj.weight, HLWQTensor)


def test_tied_lm_head_stays_unquantized(tmp_path, caplog):
    src = save_tiny_llama(tmp_path / "tied", tie=True)
    with caplog.at_level(logging.INFO, logger="hlwq_ops.quantize"):
        out = run(src, tmp_path / "q", "--include-lm-head", "--scale-mode", "norm")
    assert "--include-lm-head: lm_head.weight is tied to model.embed_tokens.weight" in caplog.text
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert not isinstance(loaded.lm_head.weight, HLWQTensor)
    assert isinstance(loaded.model.layers[0].mlp.down_proj.weight, HLWQTensor)


def test_name_heuristics_agree_with_the_skeleton(src):
    tensors = hq.source_tensors(src)
    config = hlwq(scale_mode="norm")
    for include_lm_head in (False, True):
        skeleton = hq.build_skeleton(src, include_lm_head)
        by_model = [e.config for e in hq.plan(tensors, skeleton, config, [], include_lm_head)]
        by_name = [e.config for e in hq.plan(tensors, None, config, [], include_lm_head)]
        assert by_model == by_name and sum(c is not None for c in by_model) == 14 + include_lm_head


@pytest.mark.gpu
def test_cuda_quantizes_like_cpu(src, tmp_path):
    on_gpu = run(src, tmp_path / "gpu", "--device", "cuda")  # the last --device wins
    on_cpu = run(src, tmp_path / "cpu")
    a, b = stored_tensors(on_gpu), stored_tensors(on_cpu)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loaded = AutoModelForCausalLM.from_pretrained(on_gpu, device_map="cuda")
    assert loaded.model.layers[0].mlp.down_proj.weight.qdata.is_cuda
    assert loaded.generate(PROMPT.cuda(), max_new_tokens=4, do_sample=False).shape == (1, PROMPT.shape[1] + 4)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bits", "9"], "bits must be an integer in 2..8, got 9"),
        (["--bits", "five"], "bits must be an integer in 2..8, got 'five'"),
        (["--bits-for", "(down_proj=6"], "'(down_proj' in '(down_proj=6' is not a valid regex"),
        (["--bits-for", "down_proj"], "expected REGEX=BITS such as '.*down_proj=6', got 'down_proj'"),
        (["--bits-for", ".*down_proj=1"], "bits must be an integer in 2..8, got 1"),
        (["--block-size", "100"], "block_size must be a power of two"),
        (["--max-shard-size", "5 parsecs"], "expected a positive size such as 5GB"),
        (["--scale-mode", "best"], "invalid choice: 'best'"),
    ],
)
def test_bad_arguments(src, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        hq.main(["--model", str(src), "--out", str(tmp_path / "q"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_bad_directories(src, tmp_path, capsys):
    def error(model, out):
        with pytest.raises(SystemExit) as exc:
            hq.main(["--model", str(model), "--out", str(out), "--device", "cpu"])
        assert exc.value.code == 2
        return capsys.readouterr().err

    assert f"--model {tmp_path / 'nope'}: no such directory" in error(tmp_path / "nope", tmp_path / "q")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in error(tmp_path / "empty", tmp_path / "q")
    assert "--out must differ from --model" in error(src, src)
    done = run(src, tmp_path / "done", "--scale-mode", "norm")
    assert "already holds a checkpoint" in error(src, done)
    assert "is already quantized (quant_method=torchao)" in error(done, tmp_path / "again")


def _usage_error(capsys, model: Path, out: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        hq.main(["--model", str(model), "--out", str(out), "--device", "cpu", *args])
    assert exc.value.code == 2
    return capsys.readouterr().err


def _damage(data: bytes, how: str) -> bytes:
    length = int.from_bytes(data[:8], "little")
    if how == "empty":
        return b""
    if how == "garbage":
        return bytes(range(256)) * 4
    if how == "header cut":
        return data[: 8 + length // 2]
    if how == "header not json":
        return data[:8] + b"{" + b"x" * (length - 1) + data[8 + length :]
    if how == "bytes appended":  # a header that does not cover the file: safetensors' own check
        return data + b"junk"
    if how == "entry without offsets":
        entry = b'{"w": {"dtype": "F32", "shape": [8, 256]}}'
        return len(entry).to_bytes(8, "little") + entry + bytes(8 * 256 * 4)
    return data[: 8 + length + 100]  # "data cut": the header intact, the tensors' bytes not


@pytest.mark.parametrize(
    "how, message",
    [
        ("empty", "not a safetensors file (expected an 8-byte header length, the file holds 0 bytes)"),
        ("garbage", "not a safetensors file or truncated (its header claims"),
        ("header cut", "not a safetensors file or truncated (its header claims"),
        ("header not json", "safetensors header is not valid JSON"),
        ("data cut", "truncated: tensor"),
        ("entry without offsets", "tensor 'w' has no valid safetensors entry (dtype, shape, data_offsets)"),
        ("bytes appended", "cannot read it as safetensors"),
    ],
)
def test_damaged_safetensors_are_named(src, tmp_path, capsys, how, message):
    """A damaged input file: a usage error that names it (not a struct, JSON or safetensors traceback),
    nothing written."""
    bad = shutil.copytree(src, tmp_path / "bad")
    file = bad / "model.safetensors"
    file.write_bytes(_damage(file.read_bytes(), how))
    err = _usage_error(capsys, bad, tmp_path / "q")
    assert f"{file}" in err and message in err, err
    assert not (tmp_path / "q").exists()


def test_damaged_json_and_index_are_named(sharded_src, tmp_path, capsys):
    bad = shutil.copytree(sharded_src, tmp_path / "bad")
    (bad / hq.INDEX_NAME).write_text('{"weight_map": {"a": "model-00009-of-00009.safetensors"}}')
    assert f"{bad / hq.INDEX_NAME} names model-00009-of-00009.safetensors" in _usage_error(capsys, bad, tmp_path / "q")
    (bad / hq.INDEX_NAME).write_text('{"weight_map": ')
    assert f"{bad / hq.INDEX_NAME} is not valid JSON" in _usage_error(capsys, bad, tmp_path / "q")
    (bad / "config.json").write_text("{'hidden_size': 128}")
    assert f"{bad / 'config.json'} is not valid JSON" in _usage_error(capsys, bad, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_an_index_naming_a_tensor_its_file_lacks_is_refused(sharded_src, tmp_path, capsys):
    """The index names a tensor in a shard that does not hold it: the output was written without that tensor, and
    loading it initialized the weight at random."""
    bad = shutil.copytree(sharded_src, tmp_path / "bad")
    index = json.loads((bad / hq.INDEX_NAME).read_text())
    name = "model.layers.1.mlp.down_proj.weight"
    shards = sorted(set(index["weight_map"].values()))
    wrong = next(f for f in shards if f != index["weight_map"][name])
    index["weight_map"][name] = wrong
    (bad / hq.INDEX_NAME).write_text(json.dumps(index))
    err = _usage_error(capsys, bad, tmp_path / "q")
    assert f"names 1 tensor(s) their files do not hold, e.g. {name} in {wrong} (" in err, err
    assert not (tmp_path / "q").exists()


def test_a_rule_that_earlier_rules_shadow_is_named_as_such(src, tmp_path, caplog):
    """A rule that matches modules an earlier rule takes (the first match wins) was reported as matching nothing:
    the user was told the regex was wrong where the order was."""
    rules = ["--bits-for", ".*_proj=4", "--bits-for", ".*down_proj=6", "--bits-for", ".*nothing=3"]
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        run(src, tmp_path / "q", "--scale-mode", "norm", *rules)
    assert ("--bits-for '.*down_proj' is never applied: an earlier rule takes every module it matches (e.g. "
            "'.*_proj'") in caplog.text
    assert "--bits-for '.*nothing' matches no quantized module's whole name" in caplog.text
    assert "'.*down_proj' matches no" not in caplog.text


def test_nothing_to_quantize_is_an_error(src, tmp_path, capsys, caplog):
    """Every linear narrower than the block: an error, not a checkpoint that only claims to be quantized."""
    with caplog.at_level(logging.INFO, logger="hlwq_ops.quantize"):
        err = _usage_error(capsys, src, tmp_path / "q", "--block-size", "1024")
    assert "no tensor to quantize" in err and "block_size=1024" in err
    assert "in_features=128 is smaller than one block (1024)" in caplog.text
    assert not (tmp_path / "q").exists()


def test_out_holding_an_index_is_refused(src, tmp_path, capsys):
    """A leftover index in --out would name shards this run does not write."""
    out = tmp_path / "q"
    out.mkdir()
    (out / hq.INDEX_NAME).write_text('{"weight_map": {}}')
    assert "already holds a checkpoint" in _usage_error(capsys, src, out)
    assert [p.name for p in out.iterdir()] == [hq.INDEX_NAME]


# -- session 46: inputs the tool wrote out without complaint, to fail only on loading ----------------------------


def test_a_tensor_of_another_shape_than_config_is_refused(src, tmp_path, capsys):
    """from_pretrained of the input refuses it; the quantized copy loaded into a resized module and failed in
    the forward (or, every tensor of another size, ran as another model under this config)."""
    bad = shutil.copytree(src, tmp_path / "bad")
    tensors = load_file(bad / "model.safetensors")
    name = "model.layers.0.self_attn.o_proj.weight"
    tensors[name] = torch.randn(128, 256, dtype=torch.bfloat16)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    err = _usage_error(capsys, bad, tmp_path / "q")
    assert f"tensor {name} has shape [128, 256], but config.json's LlamaForCausalLM has it as [128, 128]" in err
    assert not (tmp_path / "q").exists()


def test_a_tensor_stored_twice_is_refused(sharded_src, tmp_path, capsys):
    """A tensor stored in two shards was read (and written) twice, and the output failed to load."""
    src = shutil.copytree(sharded_src, tmp_path / "src")
    weight_map = json.loads((src / hq.INDEX_NAME).read_text())["weight_map"]
    name = "model.layers.0.mlp.down_proj.weight"
    other = sorted(set(weight_map.values()) - {weight_map[name]})[-1]
    tensors = load_file(src / other)
    save_file({**tensors, name: torch.zeros(128, 256, dtype=torch.bfloat16)}, src / other, metadata={"format": "pt"})
    err = _usage_error(capsys, src, tmp_path / "q")
    assert f"tensor {name} is stored in both" in err and other in err and "expected each tensor once" in err
    assert not (tmp_path / "q").exists()


def test_out_below_a_file_is_refused(src, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert f"{tmp_path / 'file'} is a file, not a directory" in _usage_error(capsys, src, tmp_path / "file" / "q")


@pytest.mark.parametrize("leftover", ["config.json", "pytorch_model.bin"])
def test_out_holding_another_models_files_is_refused(src, tmp_path, capsys, leftover):
    """Another model's config.json was overwritten, its .bin weights left beside the new ones."""
    out = tmp_path / "q"
    out.mkdir()
    (out / leftover).write_text("{}")
    assert "already holds a checkpoint" in _usage_error(capsys, src, out)
    assert [p.name for p in out.iterdir()] == [leftover]


def test_null_quantization_config_is_none(src, tmp_path):
    """``"quantization_config": null`` in config.json raised an AttributeError."""
    null = shutil.copytree(src, tmp_path / "null")
    config = json.loads((null / "config.json").read_text())
    (null / "config.json").write_text(json.dumps({**config, "quantization_config": None}))
    loaded = AutoModelForCausalLM.from_pretrained(run(null, tmp_path / "q", "--scale-mode", "norm"))
    assert isinstance(loaded.model.layers[0].mlp.down_proj.weight, HLWQTensor)


def test_a_failed_run_removes_the_parents_it_made(src, tmp_path, capsys):
    nan = shutil.copytree(src, tmp_path / "nan")  # (fails while writing, after the staging directory is made)
    tensors = load_file(nan / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, nan / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "a").mkdir()  # (there before: stays)
    assert "weight has NaN or Inf" in _usage_error(capsys, nan, tmp_path / "a" / "b" / "c" / "q")
    assert [p.name for p in (tmp_path / "a").iterdir()] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-shard-size", "0.1"], "such as 5GB, 500MB or 2GiB (at least a byte), got '0.1'"),
        (["--bits-for", "re:.*down_proj=6"], "expected a plain regex, without FqnToConfig's 're:' prefix"),
    ],
)
def test_sub_byte_shards_and_fqn_prefixes_are_usage_errors(src, tmp_path, capsys, args, message):
    assert message in _usage_error(capsys, src, tmp_path / "q", *args)
    assert not (tmp_path / "q").exists()


def test_fused_expert_tensors_left_as_they_are_are_warned_about(src, tmp_path, caplog):
    """transformers 5 stores a mixture-of-experts layer's experts as one 3-D tensor, not nn.Linear weights: they
    stayed in bf16 (most of such a model) with no word."""
    moe = shutil.copytree(src, tmp_path / "moe")
    tensors = load_file(moe / "model.safetensors")
    name = "model.layers.0.mlp.experts.gate_up_proj"
    tensors[name] = torch.randn(4, 128, 512, dtype=torch.bfloat16)
    save_file(tensors, moe / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        out = run(moe, tmp_path / "q", "--scale-mode", "norm")
    assert f"not quantizing {name}: a 3-D tensor (e.g. fused mixture-of-experts weights)" in caplog.text
    assert torch.equal(stored_tensors(out)[name], tensors[name])


def test_an_output_embedding_stored_under_another_name_is_quantized_when_asked(tmp_path, caplog):
    """GPT-NeoX's checkpoints store its head as ``embed_out.weight``, which transformers renames to ``lm_head.weight``
    on load: ``--include-lm-head`` left it unquantized (one INFO line); the command now renames keys as
    ``from_pretrained`` does, and writes the quantized head under the model's name, where the loader finds it."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                           num_attention_heads=4, tie_word_embeddings=False)
    GPTNeoXForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "neox")
    if "embed_out.weight" not in {t.name for t in hq.source_tensors(tmp_path / "neox")}:
        pytest.skip("this transformers stores GPT-NeoX's head under its module's name")
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        out = run(tmp_path / "neox", tmp_path / "q", "--include-lm-head", "--scale-mode", "norm")
    assert "lm_head" not in caplog.text and "linear-shaped" not in caplog.text
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(loaded.lm_head.weight, HLWQTensor)
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "neox")
    quantize_(expected, hlwq(scale_mode="norm"))
    torch.testing.assert_close(loaded(PROMPT).logits, expected(PROMPT).logits, rtol=0, atol=0)
    # --bits-for names the model's modules, as the written quantization config does
    out = run(tmp_path / "neox", tmp_path / "q4", "--include-lm-head", "--bits-for", "lm_head=4")
    assert AutoModelForCausalLM.from_pretrained(out).lm_head.weight.bits == 4


def test_a_missing_output_embedding_is_named_when_asked_to_quantize(src, caplog):
    tensors = [t for t in hq.source_tensors(src) if t.name != "lm_head.weight"]
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        hq.plan(tensors, hq.build_skeleton(src, True), hlwq(scale_mode="norm"), [], True)
    assert "--include-lm-head: the checkpoint has no tensor that loads into lm_head.weight" in caplog.text


def test_weights_merged_on_load_are_summed_up_in_one_warning(tmp_path, caplog):
    """A mixture-of-experts checkpoint stores one 2-D tensor per expert, which transformers merges into one 3-D
    parameter on load: none is quantized, and one WARNING line says how many and how large (it was one INFO line
    each)."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    config = Qwen3MoeConfig(vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=128,
                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, num_experts=2,
                            num_experts_per_tok=1)
    Qwen3MoeForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "moe")
    per_expert = [t for t in hq.source_tensors(tmp_path / "moe") if ".experts.0." in t.name]
    if not per_expert or len(per_expert[0].shape) != 2:
        pytest.skip("this transformers saves the experts as they are held (3-D), which the CLI warns about apart")
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        run(tmp_path / "moe", tmp_path / "q")
    assert re.search(r"6 linear-shaped weight\(s\) \([\d.]+ MB, "
                     r"e\.g\. model\.layers\.0\.mlp\.experts\.\d\.\w+\.weight\) "
                     r"stay unquantized: Qwen3MoeForCausalLM has no modules they load into", caplog.text)


def test_a_staging_folder_a_killed_run_left_is_named(src, tmp_path, caplog):
    """A run killed before its clean-up (SIGKILL) leaves its hidden staging folder beside --out (inside it if it
    existed); the next run says so, and leaves it to the user."""
    left = tmp_path / ".q.0123abcd.partial"
    left.mkdir()
    with caplog.at_level(logging.WARNING, logger="hlwq_ops.quantize"):
        run(src, tmp_path / "q")
    assert f"{left} was left by a run that was killed" in caplog.text and left.is_dir()
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "q").model.layers[0].mlp.up_proj.weight,
                      HLWQTensor)


def test_a_checkpoint_stored_without_the_base_models_prefix(tmp_path):
    """OPT's own checkpoints store ``decoder.*`` for the model's ``model.decoder.*``; ``from_pretrained`` adds the
    prefix. The command quantized none of their weights (then refused: "no tensor to quantize"); it now finds their
    modules, and writes the quantized weights under the model's names, where transformers' torchao loader looks for
    their parts (under the stored names it failed: "We encountered some issues during automatic conversion")."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=256, hidden_size=128, ffn_dim=256, num_hidden_layers=1, num_attention_heads=4,
                       word_embed_proj_dim=128)
    OPTForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "opt")
    tensors = load_file(tmp_path / "opt" / "model.safetensors")
    save_file({k.removeprefix("model."): v for k, v in tensors.items()}, tmp_path / "opt" / "model.safetensors",
              metadata={"format": "pt"})
    out = run(tmp_path / "opt", tmp_path / "q", "--scale-mode", "norm")
    written = stored_tensors(out).keys()
    assert "model.decoder.layers.0.self_attn.q_proj._weight_qdata" in written  # (the model's name)
    assert "decoder.layers.0.self_attn.q_proj.bias" in written  # (as stored: transformers adds the prefix)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(loaded.model.decoder.layers[0].self_attn.q_proj.weight, HLWQTensor)
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "opt")
    quantize_(expected, hlwq(scale_mode="norm"), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)
              and fqn != "lm_head")
    torch.testing.assert_close(loaded(PROMPT).logits, expected(PROMPT).logits, rtol=0, atol=0)


def test_layers_transformers_drops_on_load_are_not_counted_as_renamed(tmp_path, caplog):
    """Qwen3.5's checkpoints hold multi-token-prediction layers (``mtp.*``) that its model drops on load
    (``_keys_to_ignore_on_load_unexpected``): they stay as they are with their own reason, not in the warning about
    weights merged on load."""
    from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    torch.manual_seed(0)
    config = Qwen3_5TextConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=64, linear_num_key_heads=4,
                               linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
                               layer_types=["linear_attention", "full_attention"])
    Qwen3_5ForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "q35")
    tensors = load_file(tmp_path / "q35" / "model.safetensors")
    tensors["mtp.layers.0.mlp.up_proj.weight"] = torch.randn(256, 128, dtype=torch.bfloat16)
    save_file(tensors, tmp_path / "q35" / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="hlwq_ops.quantize"):
        run(tmp_path / "q35", tmp_path / "q", "--scale-mode", "norm")
    assert "not quantizing mtp.layers.0.mlp.up_proj.weight: Qwen3_5ForCausalLM drops it on load" in caplog.text
    assert "linear-shaped weight(s)" not in caplog.text
