"""benchmarks/quality.py on tiny inputs: it runs, and its numbers are sane."""

import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
BITS = range(2, 9)


@pytest.fixture(scope="module")
def quality_main():
    return runpy.run_path(str(SCRIPT))["main"]


def check_sane(methods: dict) -> None:
    """The scale modes rank as designed, SQNRs are finite, RTN improves with bits."""
    for bits in (4, 5):
        mse = [methods[f"hlwq-{mode}"][bits]["rel_mse"] for mode in ("search", "lsq", "norm")]
        assert mse == sorted(mse), f"bits={bits}: search, lsq, norm weight MSE {mse} not ascending"
    for name, per_bits in methods.items():
        for bits, numbers in per_bits.items():
            assert math.isfinite(numbers["sqnr_db"]), f"{name} bits={bits}: SQNR {numbers['sqnr_db']}"
            assert 0 < numbers["rel_mse"] < 1, f"{name} bits={bits}: rel_mse {numbers['rel_mse']}"
    rtn = [methods["rtn"][bits]["rel_mse"] for bits in BITS]
    assert all(a > b for a, b in zip(rtn, rtn[1:])), f"RTN weight MSE not decreasing with bits: {rtn}"
    assert methods["hlwq-search"][4]["bits_per_weight"] == 4 + 16 / 128
    assert methods["rtn"][4]["bits_per_weight"] == 4 + 32 / 128


def test_gaussian(quality_main, capsys):
    results = quality_main(["--rows", "16", "--cols", "256", "--m", "8"])
    (result,) = results.values()
    assert result["tensors"] == 1 and result["weights"] == 16 * 256
    check_sane(result["methods"])
    assert "sqnr_db" in capsys.readouterr().out


def test_safetensors(quality_main, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(
        {
            "a.weight": torch.randn(48, 256) * 0.02,
            "b.weight": torch.randn(40, 200).to(torch.bfloat16),  # K not a multiple of 128
            "a.bias": torch.randn(256),  # 1-D: skipped
            "narrow.weight": torch.randn(8, 64),  # K < 128: skipped
            "ids": torch.arange(512).view(2, 256),  # integer: skipped
        },
        str(path),
    )
    out = tmp_path / "q.json"
    results = quality_main([str(path), "--max-rows", "24", "--m", "8", "--json", str(out)])
    result = results[str(path)]
    # Every second row of a (48 -> 24) and of b (40 -> 20).
    assert result["tensors"] == 2 and result["weights"] == 24 * 256 + 20 * 200
    check_sane(result["methods"])
    saved = json.loads(out.read_text())
    assert saved[str(path)]["methods"]["nf"]["4"]["rel_mse"] == pytest.approx(result["methods"]["nf"][4]["rel_mse"])
