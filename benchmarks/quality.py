"""Quantization quality of HLWQ against RTN and NormalFloat at equal code width.

For bits 2..8 and each method, prints

- the relative weight MSE ``||W - W_hat||^2 / ||W||^2``,
- the linear-output SQNR ``10 log10(||X W^T||^2 / ||X (W - W_hat)^T||^2)`` in
  dB, with ``X`` a seeded N(0, 1) activation matrix of shape (M, K) (so close
  to ``-10 log10`` of the weight MSE; outlier activations would differ),
- the storage in bits per weight (codes plus per-group float16 parameters).

Methods, all with groups (blocks) of 128 weights along K:

- ``hlwq-<scale_mode>``: ``hlwq_ops.format.quantize_ref`` for each scale mode;
  ``bits + 16/128`` bits per weight (one float16 scale).
- ``rtn``: asymmetric round-to-nearest integers, as torchao's int4 weight-only
  (tinygemm) layout: per group ``scale = (max - min) / (2**bits - 1)`` and an
  offset; ``bits + 32/128`` bits per weight (float16 scale and zero point).
- ``nf``: QLoRA's NormalFloat generalized to ``bits``: levels at N(0, 1)
  quantiles scaled to [-1, 1], times the group's absmax; ``bits + 16/128``.

Inputs: by default one seeded Gaussian weight; otherwise every 2-D floating
tensor with K >= 128 of each ``.safetensors`` file given. Over the tensors of a
file, error and signal energies are summed before taking the ratios, so the
weight MSE is energy-weighted and the SQNR is that of all outputs concatenated.

    python benchmarks/quality.py                       # Gaussian 1024 x 4096
    python benchmarks/quality.py model.safetensors --max-rows 4096 --json q.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from safetensors import safe_open

from hlwq_ops.codebook import MAX_BITS, MIN_BITS
from hlwq_ops.format import SCALE_MODES, dequantize_ref, quantize_ref

GROUP_SIZE = 128
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}

Roundtrip = Callable[[torch.Tensor, int], torch.Tensor]
# {method: {bits: {"rel_mse", "sqnr_db", "bits_per_weight"}}}
Summary = dict[str, dict[int, dict[str, float]]]


# ---------------------------------------------------------------------------
# Quantizers: each maps an (N, K) float32 weight to its (N, K) reconstruction.
# ---------------------------------------------------------------------------


def hlwq_roundtrip(scale_mode: str) -> Roundtrip:
    """HLWQ quantize + dequantize with ``scale_mode``, block size 128."""

    def roundtrip(w: torch.Tensor, bits: int) -> torch.Tensor:
        qdata, scale = quantize_ref(w, bits, GROUP_SIZE, scale_mode=scale_mode)
        return dequantize_ref(qdata, scale, bits, GROUP_SIZE, w.shape[1])

    return roundtrip


def _groups(w: torch.Tensor) -> torch.Tensor:
    """(N, K) -> (N, n_groups, 128).

    A ragged last group is padded with copies of its last weight, which leaves
    its min, max and absmax unchanged.
    """
    N, K = w.shape
    pad = -K % GROUP_SIZE
    w = torch.cat([w, w[:, -1:].expand(N, pad)], dim=1)
    return w.view(N, -1, GROUP_SIZE)


def _ungroup(g: torch.Tensor, K: int) -> torch.Tensor:
    """(N, n_groups, 128) -> (N, K)."""
    return g.reshape(g.shape[0], -1)[:, :K]


def _fp16(t: torch.Tensor) -> torch.Tensor:
    """Round to float16, as the group parameters are stored."""
    return t.to(torch.float16).to(torch.float32)


def rtn_roundtrip(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric round-to-nearest with a float16 scale and zero point per group."""
    g = _groups(w)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    q_max = 2**bits - 1
    scale = _fp16((hi - lo).clamp_min(1e-12) / q_max)
    zero = _fp16(lo)
    q = ((g - zero) / scale).round().clamp(0, q_max)
    return _ungroup(q * scale + zero, w.shape[1])


def normal_float_levels(bits: int) -> torch.Tensor:
    """NF levels for ``bits``, built the way bitsandbytes builds NF4.

    Like NF4 the levels include an exact zero, so they are asymmetric:
    ``2**(bits-1)`` positive and ``2**(bits-1) - 1`` negative normal quantiles,
    each side divided by its largest magnitude so that both ends are +-1.
    The outermost quantile, ``offset``, is NF4's rule generalized: the mean of
    ``1 - 1/(2 n)`` for ``n = 2**bits - 1`` and ``n = 2**bits`` (0.9677 at 4 bits).

    Returns:
        (2**bits,) float32, sorted ascending.
    """
    half = 2 ** (bits - 1)
    n = 2**bits
    offset = 0.5 * ((1 - 0.5 / (n - 1)) + (1 - 0.5 / n))
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, half + 1, dtype=torch.float64)[:-1])
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, half, dtype=torch.float64)[:-1])
    levels = torch.cat([pos / pos.max(), neg / neg.abs().max(), torch.zeros(1, dtype=torch.float64)])
    return levels.sort().values.to(torch.float32)


def nf_roundtrip(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Nearest NF level times the group's absmax (stored as float16)."""
    g = _groups(w)
    absmax = _fp16(g.abs().amax(-1, keepdim=True))
    safe = torch.where(absmax > 0, absmax, 1.0)
    levels = normal_float_levels(bits)
    codes = torch.bucketize(g / safe, 0.5 * (levels[1:] + levels[:-1]))
    return _ungroup(levels[codes] * absmax, w.shape[1])


def methods() -> dict[str, tuple[Roundtrip, float]]:
    """Method name -> (roundtrip, float16 overhead bits per weight)."""
    table = {f"hlwq-{mode}": (hlwq_roundtrip(mode), 16 / GROUP_SIZE) for mode in SCALE_MODES}
    table["rtn"] = (rtn_roundtrip, 32 / GROUP_SIZE)
    table["nf"] = (nf_roundtrip, 16 / GROUP_SIZE)
    return table


# ---------------------------------------------------------------------------
# Metrics.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Energies:
    """Summed squared norms; adding two sums the tensors they come from."""

    weight: float = 0.0
    weight_error: float = 0.0
    output: float = 0.0
    output_error: float = 0.0

    def __add__(self, other: Energies) -> Energies:
        return Energies(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def rel_mse(self) -> float:
        return self.weight_error / self.weight

    @property
    def sqnr_db(self) -> float:
        return 10 * math.log10(self.output / self.output_error) if self.output_error > 0 else math.inf


def energies(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> Energies:
    """Energies of ``w`` (N, K) and its error, and of ``x @ w.T`` and its error; x: (M, K)."""
    err = w - w_hat

    def sq(t: torch.Tensor) -> float:
        return t.double().square().sum().item()

    return Energies(sq(w), sq(err), sq(x @ w.t()), sq(x @ err.t()))


# ---------------------------------------------------------------------------
# Inputs: iterables of (N, K) float32 weights.
# ---------------------------------------------------------------------------


def gaussian_weights(rows: int, cols: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, cols, generator=gen)]


def safetensors_weights(path: str, max_tensors: int | None, max_rows: int | None) -> Iterator[torch.Tensor]:
    """The 2-D floating tensors of ``path`` with K >= 128, loaded one at a time.

    With ``max_rows``, a tensor with more rows keeps evenly spaced ones (the
    first rows of an embedding are often unused tokens, not a fair sample).
    """
    with safe_open(path, framework="pt") as f:
        n_taken = 0
        for name in f.keys():
            sl = f.get_slice(name)
            shape = sl.get_shape()
            if sl.get_dtype() not in FLOAT_DTYPES or len(shape) != 2 or shape[1] < GROUP_SIZE:
                continue
            if max_tensors is not None and n_taken >= max_tensors:
                return
            step = 1 if max_rows is None else -(-shape[0] // max_rows)
            n_taken += 1
            yield sl[::step].to(torch.float32)


# ---------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------


def evaluate(
    weights: Iterable[torch.Tensor], bits_list: list[int], m: int, seed: int
) -> tuple[dict[str, dict[int, Energies]], int, int]:
    """Sum the energies of every method and bit width over ``weights``.

    Returns:
        {method: {bits: Energies}}, the number of tensors and of weights.
    """
    table = methods()
    totals = {name: {bits: Energies() for bits in bits_list} for name in table}
    n_tensors = n_weights = 0
    for w in weights:
        # seed + 1: with the Gaussian weight's own seed, X would repeat its first rows.
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(m, w.shape[1], generator=gen)
        for name, (roundtrip, _) in table.items():
            for bits in bits_list:
                totals[name][bits] += energies(w, roundtrip(w, bits), x)
        n_tensors += 1
        n_weights += w.numel()
    return totals, n_tensors, n_weights


def summarize(totals: dict[str, dict[int, Energies]]) -> Summary:
    """The ratios of the summed energies, and the storage cost."""
    overhead = {name: extra for name, (_, extra) in methods().items()}
    return {
        name: {
            bits: {"rel_mse": e.rel_mse, "sqnr_db": e.sqnr_db, "bits_per_weight": bits + overhead[name]}
            for bits, e in per_bits.items()
        }
        for name, per_bits in totals.items()
    }


def format_table(summary: Summary, key: str, fmt: str, best: Callable | None) -> str:
    """One metric as a (method x bits) table; ``best`` (min or max) adds a row of winners."""
    bits_list = list(next(iter(summary.values())))
    lines = [f"{key:<16}" + "".join(f"{b:>13}" for b in bits_list)]
    for name, per_bits in summary.items():
        lines.append(f"{name:<16}" + "".join(f"{per_bits[b][key]:>13{fmt}}" for b in bits_list))
    if best is not None:
        winners = [best(summary, key=lambda name: summary[name][b][key]) for b in bits_list]
        lines.append(f"{'best':<16}" + "".join(f"{w:>13}" for w in winners))
    return "\n".join(lines)


def report(label: str, summary: Summary, n_tensors: int, n_weights: int, seconds: float) -> str:
    header = f"== {label}: {n_tensors} tensor(s), {n_weights:,} weights, {seconds:.1f} s"
    tables = [
        format_table(summary, "rel_mse", ".3e", min),
        format_table(summary, "sqnr_db", ".2f", max),
        format_table(summary, "bits_per_weight", ".3f", None),
    ]
    return "\n\n".join([header, *tables])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help=".safetensors files (default: one Gaussian weight)")
    p.add_argument("--rows", type=int, default=1024, help="N of the Gaussian weight")
    p.add_argument("--cols", type=int, default=4096, help="K of the Gaussian weight")
    p.add_argument("--bits", type=int, nargs="+", default=list(range(MIN_BITS, MAX_BITS + 1)))
    p.add_argument("--m", type=int, default=64, help="rows of the activation matrix X")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tensors", type=int, default=None, help="first N eligible tensors per file")
    p.add_argument("--max-rows", type=int, default=None, help="evenly spaced rows kept per tensor")
    p.add_argument("--json", default=None, help="write the numbers here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """Run the benchmark, print one report per input; return {input: results}."""
    args = parse_args(argv)
    if args.paths:
        inputs = [(p, safetensors_weights(p, args.max_tensors, args.max_rows)) for p in args.paths]
    else:
        inputs = [(f"gaussian {args.rows}x{args.cols}", gaussian_weights(args.rows, args.cols, args.seed))]
    results = {}
    for label, weights in inputs:
        start = time.perf_counter()
        totals, n_tensors, n_weights = evaluate(weights, args.bits, args.m, args.seed)
        seconds = time.perf_counter() - start
        if n_tensors == 0:
            raise ValueError(f"{label} has no 2-D floating tensor with at least {GROUP_SIZE} columns")
        summary = summarize(totals)
        print(report(label, summary, n_tensors, n_weights, seconds), end="\n\n", flush=True)
        results[label] = {"tensors": n_tensors, "weights": n_weights, "seconds": seconds, "methods": summary}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
