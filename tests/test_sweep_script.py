"""benchmarks/sweep_architectures.py on a few architectures: it runs, and it reports a GraphDecoder that parts from
generate()."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import transformers

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_architectures.py"


@pytest.fixture
def sweep(monkeypatch):
    """The script as a module; torch's thread count and transformers' verbosity, which its ``main`` sets, restored."""
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    spec = importlib.util.spec_from_file_location("sweep_architectures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


def test_the_sweep_matches_generate(sweep, capsys):
    assert sweep.main(["--only", "llama", "mamba", "falcon-alibi", "--cases", "eager", "eager-padded",
                       "--quantize"]) == 0
    out = capsys.readouterr().out
    assert out.count("match\n") == 6 and "summary: 6 match over 3 architectures" in out
    assert "falcon-alibi" in out and "default cache" in out  # (its generate() with a static cache fails)


def test_the_sweep_reports_a_mismatch(sweep, capsys):
    """A decoder whose last token is off by one: MISMATCH, named, and exit status 1."""
    real = sweep.GraphDecoder

    class OffByOne(real):
        def generate(self, *args, **kwargs):
            tokens = super().generate(*args, **kwargs)
            return torch.cat([tokens[:, :-1], (tokens[:, -1:] + 1) % 512], dim=1)

    sweep.GraphDecoder = OffByOne
    assert sweep.main(["--only", "llama", "--cases", "eager"]) == 1
    out = capsys.readouterr().out
    assert "llama                eager            MISMATCH: first call: row 0 from new token 7" in out
    assert "failed: llama eager" in out


def test_an_architecture_transformers_lacks_is_skipped(sweep, capsys, monkeypatch):
    monkeypatch.setitem(sweep.ARCHITECTURES, "nonesuch", ("NoSuchConfig", {}))
    assert sweep.main(["--only", "nonesuch", "--cases", "eager"]) == 0
    assert "nonesuch             -                skipped: transformers" in capsys.readouterr().out
