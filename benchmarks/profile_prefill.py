"""Where the eager prefill's time goes (time to first token): host vs GPU, per op, bf16 against HLWQ.

    python benchmarks/profile_prefill.py --methods bf16 hlwq-q5 --batch 1

Builds the Llama-3-8B-shaped model of ``bench_decode.py`` for each method, runs
the 128-token prompt through the eager forward (no cache) a few times, then
reports the wall time per forward, the GPU's busy time in the same forward
(from ``torch.profiler``), the peak memory above the model, and the ops with
the most host time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(__file__))
from bench_decode import PROMPT, build  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["bf16", "hlwq-q5"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    for method in a.methods:
        model, _ = build("llama3-8b", method)
        ids = torch.randint(0, model.config.vocab_size, (a.batch, PROMPT), device="cuda")
        with torch.no_grad():
            for _ in range(3):
                model(ids, use_cache=False)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            walls = []
            for _ in range(5):
                start = time.perf_counter()
                model(ids, use_cache=False)
                torch.cuda.synchronize()
                walls.append(1e3 * (time.perf_counter() - start))
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                model(ids, use_cache=False)
                torch.cuda.synchronize()
        events = prof.key_averages()
        gpu_ms = sum(e.self_device_time_total for e in events) / 1e3
        print(f"\n== {method}, batch {a.batch}: forward {sorted(walls)[2]:.1f} ms wall (median of 5), "
              f"GPU busy {gpu_ms:.1f} ms, peak {peak:.0f} MiB above the model", flush=True)
        print(events.table(sort_by="self_cpu_time_total", row_limit=a.top), flush=True)
        print(events.table(sort_by="self_device_time_total", row_limit=8), flush=True)
        del model, prof, events
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
