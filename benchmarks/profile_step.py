"""Where a decode step's GPU time goes, kernel by kernel (the graph way of ``bench_decode.py``).

    python benchmarks/profile_step.py --methods hlwq-q5 int4 bf16

For each method, in a process of its own (so one's compiled graphs and pools do
not weigh on the next), the Llama-3-8B-shaped model of ``bench_decode.py`` at
batch 1: a warm-up call of :class:`hlwq_ops.decode.GraphDecoder` (compiles,
tunes, captures) and a timed one (decode tokens/s), then ``--steps`` replays of
the captured step under ``torch.profiler``, each with the token copy and the
position update of ``GraphDecoder.generate``'s loop (not its copy into the
output): each kernel's GPU time a step, by name, beside the timed call's step
time. Their difference ("between kernels") is the time the GPU spent outside
kernels, taken from two runs (the timed call, the profiled replays). A method
that fails prints its error, and the script then exits with status 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torchao.quantization.utils import recommended_inductor_config_setter

sys.path.insert(0, os.path.dirname(__file__))
from bench_decode import NEW, PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402


def kernel_times(step, steps: int) -> dict[str, tuple[float, float]]:
    """{kernel name: (us a step, launches a step)} on the GPU over ``steps`` calls of ``step()``."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            totals[e.name][0] += e.time_range.elapsed_us()
            totals[e.name][1] += 1
    return {name: (t / steps, n / steps) for name, (t, n) in totals.items()}


def one(method: str, steps: int) -> dict:
    """Decode step time (a 256-token call after the warm-up's) and its kernels, replaying the captured step as
    ``GraphDecoder.generate`` does."""
    start = time.perf_counter()
    model, _ = build("llama3-8b", method)
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    decoder = GraphDecoder(model)
    decoder.generate(ids, NEW)  # compiles, tunes, captures
    decoder.generate(ids, NEW)
    step_us = 1e6 / decoder.stats.decode_tokens_per_s
    # what generate()'s loop runs a token, in an emptied cache (its layers count the steps themselves: replays past
    # its length index out of it); the positions go on from the prompt's while the keys and values are written from
    # slot 0, which costs the same (the static cache's attention spans its whole length)
    graph, out, token, position = decoder._graph, decoder._graph_out, decoder._token, decoder._position
    decoder._cache.reset()
    position.fill_(PROMPT)

    def step():
        graph.replay()
        token.copy_(out)
        position.add_(1)

    rows, mode = kernel_times(step, steps), "graph"
    if sum(n for _, n in rows.values()) < 50:  # the profiler did not see into the graph's replays
        decoder._cache.reset()
        position.fill_(PROMPT)
        rows = kernel_times(lambda: (decoder._step(*decoder._inputs), position.add_(1)), steps)
        mode = "compiled step without its graph (the graph's kernels were not seen)"
    return dict(method=method, step_us=step_us, mode=mode, kernels=rows, wall_s=time.perf_counter() - start)


def report(result: dict, top: int) -> None:
    rows = sorted(result["kernels"].items(), key=lambda kv: -kv[1][0])
    busy = sum(t for t, _ in result["kernels"].values())
    launches = sum(n for _, n in result["kernels"].values())
    print(f"\n{result['method']} ({result['mode']}): step {result['step_us']:.1f} us "
          f"(decode tok/s {1e6 / result['step_us']:.1f}); "
          f"kernels {busy:.1f} us in {launches:.0f} launches a step; "
          f"between kernels {result['step_us'] - busy:.1f} us; "
          f"the process's work {result['wall_s']:.0f} s")
    print(f"{'us/step':>9} {'n/step':>7} {'us each':>8}  kernel")
    for name, (t, n) in rows[:top]:
        print(f"{t:9.1f} {n:7.1f} {t / max(n, 1e-9):8.2f}  {name[:110]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["hlwq-q5", "int4", "bf16"])
    p.add_argument("--steps", type=int, default=32, help="decode steps profiled (1 to 255)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--inductor-recommended", action="store_true",
                   help="torchao's recommended Inductor settings (coordinate descent tuning, ...) for every method; "
                        "torchao's int4 config applies them itself")
    p.add_argument("--json", help="write every method's per-step kernel table here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: this method, JSON on stdout's last line
    a = p.parse_args()
    if not 1 <= a.steps < NEW:
        p.error(f"--steps must be 1 to {NEW - 1} (the captured cache holds {NEW} new tokens), got {a.steps}")
    if a.one:
        if a.inductor_recommended:
            recommended_inductor_config_setter()
        print(json.dumps(one(a.one, a.steps)), flush=True)
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    results, failed = [], []
    for method in a.methods:
        child = [sys.executable, __file__, "--one", method, "--steps", str(a.steps)]
        child += ["--inductor-recommended"] if a.inductor_recommended else []
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method}: failed (rc {done.returncode}):\n{done.stderr[-3000:]}", flush=True)
            failed.append(method)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        report(results[-1], a.top)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
