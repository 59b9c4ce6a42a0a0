"""Diagnostic: the prompt's forward (``GraphDecoder``'s time to first token) eager against compiled.

``GraphDecoder`` runs the prompt eagerly into its static cache; with HLWQ weights that forward is host-bound (NOTES
36: ~1.15x bf16's GPU time, ~2x its wall time). This times the same forward -- a 128-token prompt, batch 1, into a
static cache, the last position's logits -- eagerly and compiled by ``torch.compile`` (``fullgraph``, static
shapes, Inductor's default mode: no CUDA graphs), on the Llama-3-8B-shaped model of ``bench_decode.py``: the
median wall time of ``--reps`` forwards after a warm-up one, the compile's own time, and the largest difference of
the compiled logits from the eager ones. ``--graph`` also captures each forward (eager and compiled) in a CUDA graph
and times its replays: the GPU's time alone, no host. ``--profile DIR`` writes ``torch.profiler``'s tables of one
compiled forward (host and GPU time per op and kernel) to ``DIR/prefill_profile_<method>.txt``. Methods in order,
one model at a time::

    python benchmarks/diag_prefill.py --methods hlwq-q5 bf16 --graph --profile . --json diag_prefill.json
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
from torch.profiler import ProfilerActivity, profile
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


def graph_replay_ms(forward, cache: StaticCache, ids: torch.Tensor, reps: int) -> float:
    """Median milliseconds of one replay of ``forward(ids)`` captured in a CUDA graph (warmed up on a side stream
    first, as capturing asks). The cache is reset before every forward and replay, outside the timed events: each
    writes the prompt from the cache's position counter on, which a full cache would overflow."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            cache.reset()
            forward(ids)
    torch.cuda.current_stream().wait_stream(side)
    cache.reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward(ids)
    times = []
    for _ in range(reps + 1):
        cache.reset()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times[1:])


def write_profile(forward, cache: StaticCache, ids: torch.Tensor, path: Path) -> float:
    """``torch.profiler``'s tables of one call of ``forward`` (by host time, by GPU time) to ``path``; the GPU's busy
    milliseconds (the kernels' own time summed)."""
    cache.reset()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        forward(ids)
        torch.cuda.synchronize()
    events = prof.key_averages()
    busy_ms = sum(e.self_device_time_total for e in events) / 1e3
    path.write_text(f"GPU busy {busy_ms:.2f} ms\n\n" + events.table(sort_by="self_cpu_time_total", row_limit=25)
                    + "\n\n" + events.table(sort_by="self_device_time_total", row_limit=25) + "\n")
    return busy_ms


def measure(model: torch.nn.Module, ids: torch.Tensor, reps: int, graph: bool, profile_path: Path | None) -> dict:
    """The eager and the compiled prompt forward of ``model``; with ``graph``, each one's CUDA graph replayed too;
    with ``profile_path``, the compiled one's profile written there."""
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + 16)
    forward = prompt_forward(model, cache)
    row = {}
    with torch.no_grad():
        _, eager_s, eager_logits = time_forward(forward, cache, ids, reps)
        if graph:
            row["eager_graph_ms"] = graph_replay_ms(forward, cache, ids, reps)
        torch._dynamo.reset()
        compiled = torch.compile(forward, fullgraph=True, dynamic=False)
        first_s, compiled_s, logits = time_forward(compiled, cache, ids, reps)
        if profile_path is not None:
            row["compiled_gpu_busy_ms"] = write_profile(compiled, cache, ids, profile_path)
        if graph:
            row["compiled_graph_ms"] = graph_replay_ms(compiled, cache, ids, reps)
    return dict(eager_ms=1e3 * eager_s, compiled_ms=1e3 * compiled_s, compile_and_first_call_s=first_s,
                max_abs_logit_difference=float((logits.float() - eager_logits.float()).abs().max()), **row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["hlwq-q5", "bf16"])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", default="diag_prefill.json")
    p.add_argument("--graph", action="store_true", help="also time each forward's CUDA graph replayed")
    p.add_argument("--profile", type=Path, help="a directory for the compiled forward's profile, one file a method")
    args = p.parse_args()
    rows = []
    for method in args.methods:
        model, _ = build("llama3-8b", method)
        ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
        profile_path = None if args.profile is None else args.profile / f"prefill_profile_{method}.txt"
        rows.append(dict(method=method, **measure(model, ids, args.reps, args.graph, profile_path)))
        print(json.dumps(rows[-1]), flush=True)
        Path(args.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))
        del model
        gc.collect()
        torch._dynamo.reset()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
