"""Diagnostic: the prompt's forward (``GraphDecoder``'s time to first token) eager against compiled.

``GraphDecoder`` runs the prompt eagerly into its static cache; with HLWQ weights that forward is host-bound (NOTES
36: ~1.15x bf16's GPU time, ~2x its wall time). This times the same forward -- a 128-token prompt, batch 1, into a
static cache, the last position's logits -- eagerly and compiled by ``torch.compile`` (``fullgraph``, static
shapes, Inductor's default mode: no CUDA graphs), on the Llama-3-8B-shaped model of ``bench_decode.py``: the
median wall time of ``--reps`` forwards after a warm-up one, the compile's own time, and the largest difference of
the compiled logits from the eager ones. Methods in order, one model at a time::

    python benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --json diag_prefill.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import StaticCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import PROMPT, build  # noqa: E402

from hlwq_ops.decode import cache_argument  # noqa: E402


def prompt_forward(model: torch.nn.Module, cache: StaticCache):
    """``forward(ids) -> last logits``: the prompt into ``cache`` as ``GraphDecoder.generate`` runs it."""
    cache_arg = cache_argument(model)

    def forward(ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return model(input_ids=ids, cache_position=positions, use_cache=True, logits_to_keep=1,
                     **{cache_arg: cache}).logits

    return forward


def time_forward(forward, cache: StaticCache, ids: torch.Tensor, reps: int) -> tuple[float, float, torch.Tensor]:
    """(seconds of the first call, median seconds of ``reps`` later calls, the last logits), the cache reset before
    each call."""
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    times = []
    for _ in range(reps + 1):
        cache.reset()
        sync()
        start = time.perf_counter()
        logits = forward(ids)
        sync()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:]), logits


def measure(model: torch.nn.Module, ids: torch.Tensor, reps: int) -> dict:
    """The eager and the compiled prompt forward of ``model``."""
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + 16)
    forward = prompt_forward(model, cache)
    with torch.no_grad():
        _, eager_s, eager_logits = time_forward(forward, cache, ids, reps)
        torch._dynamo.reset()
        compiled = torch.compile(forward, fullgraph=True, dynamic=False)
        first_s, compiled_s, logits = time_forward(compiled, cache, ids, reps)
    return dict(eager_ms=1e3 * eager_s, compiled_ms=1e3 * compiled_s, compile_and_first_call_s=first_s,
                max_abs_logit_difference=float((logits.float() - eager_logits.float()).abs().max()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["hlwq-q5", "bf16"])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", default="diag_prefill.json")
    args = p.parse_args()
    rows = []
    for method in args.methods:
        model, _ = build("llama3-8b", method)
        ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
        rows.append(dict(method=method, **measure(model, ids, args.reps)))
        print(json.dumps(rows[-1]), flush=True)
        Path(args.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))
        del model
        gc.collect()
        torch._dynamo.reset()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
