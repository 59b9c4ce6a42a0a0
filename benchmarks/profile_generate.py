"""Where a `model.generate()` token's time goes, bf16 against HLWQ (the gap of RESULTS section 8b).

    python benchmarks/profile_generate.py --methods bf16 hlwq-q5 --tokens 32

For each method, the Llama-3-8B-shaped model of ``bench_decode.py``; one
``StaticCache`` for every call (``generate-reuse``: one CUDA graph). After a
warm-up call it reports the wall time per token (median of three calls), then
profiles one more call twice: with ``torch.profiler`` (the GPU's busy time per
token, the ops with the most host time and those with the most GPU time) and
with ``cProfile`` (the Python functions with the most own time -- dynamo's
guards, CUDA-graph-tree bookkeeping, the generation loop).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import StaticCache

sys.path.insert(0, os.path.dirname(__file__))
from bench_decode import PROMPT, build  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["bf16", "hlwq-q5"])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    for method in a.methods:
        model, _ = build("llama3-8b", method)
        ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")  # no pad id (0): no padding
        cache = StaticCache(config=model.config, max_cache_len=PROMPT + a.tokens)
        kwargs = dict(max_new_tokens=a.tokens, do_sample=False, past_key_values=cache)

        def call(model=model, cache=cache, kwargs=kwargs):
            cache.reset()
            model.generate(ids, **kwargs)
            torch.cuda.synchronize()

        with torch.no_grad():
            call()  # compiles and records
            walls = []
            for _ in range(3):
                start = time.perf_counter()
                call()
                walls.append(1e3 * (time.perf_counter() - start) / a.tokens)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                call()
            py = cProfile.Profile()
            py.enable()
            call()
            py.disable()
        events = prof.key_averages()
        gpu_ms = sum(e.self_device_time_total for e in events) / 1e3 / a.tokens
        print(f"\n== {method}: {sorted(walls)[1]:.2f} ms per token wall (median of 3, prefill included), "
              f"GPU busy {gpu_ms:.2f} ms per token", flush=True)
        print(events.table(sort_by="self_cpu_time_total", row_limit=a.top), flush=True)
        print(events.table(sort_by="self_device_time_total", row_limit=a.top), flush=True)
        out = io.StringIO()
        pstats.Stats(py, stream=out).sort_stats("tottime").print_stats(a.top)
        print(out.getvalue(), flush=True)
        del model, cache, prof, events, py
        torch._dynamo.reset()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
