"""Diagnostic: the batch-1 decode step with and without :class:`hlwq_ops.GroupProjections` (q, k and v in one GEMV,
gate and up in another), Llama-3-8B shape, on one GPU.

One process, one model: ``GraphDecoder(model, group_projections=False)`` and ``=True`` alternate, ``--rounds`` times
each, every round compiled and captured afresh (128-token prompt, 256 new tokens, greedy). The first round runs on
an untuned table where the tuning cache is empty, so its warm-up tunes every key. Per round: decode tokens/s, time
to first token, the warm-up call's and the timed call's peak memory (above what the round started with), the new
tokens, and where they first differ from the same kind's first round and from the ungrouped first round. From the
repository's root::

    python benchmarks/diag_grouped.py --rounds 2 --json diag_grouped.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import NEW, PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first new token (from 0) at which two runs differ; None where they agree."""
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def _round(model, ids: torch.Tensor, grouped: bool) -> tuple[dict, torch.Tensor]:
    """One round: a fresh compile and capture, the warm-up call, the timed call."""
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    decoder = GraphDecoder(model, group_projections=grouped)
    decoder.generate(ids, NEW)  # warm-up: compiles, tunes where the table lacks a key, captures
    warm_peak = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    out = decoder.generate(ids, NEW)[0, PROMPT:]
    row = dict(grouped=grouped, tok_s=decoder.stats.decode_tokens_per_s, ttft_ms=1e3 * decoder.stats.prefill_s,
               warm_up_peak_mib=warm_peak / 2**20,
               steady_peak_mib=(torch.cuda.max_memory_allocated() - base) / 2**20,
               wall_s=time.perf_counter() - start)
    return row, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default="diag_grouped.json")
    args = p.parse_args()
    model, _ = build("llama3-8b", f"hlwq-q{args.bits}")
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    rows, first = [], {}
    for round_ in range(args.rounds):
        for grouped in (False, True):
            row, out = _round(model, ids, grouped)
            first.setdefault(grouped, out)  # each kind's first round: what later rounds should repeat
            row.update(round=round_, differs_from_first_round_at=_first_difference(out, first[grouped]),
                       differs_from_ungrouped_at=_first_difference(out, first[False]), tokens=out.tolist())
            print(json.dumps({k: v for k, v in row.items() if k != "tokens"}), flush=True)
            rows.append(row)
    Path(args.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), new=NEW, rows=rows), indent=1))


if __name__ == "__main__":
    main()
