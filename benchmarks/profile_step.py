"""Where a decode step's GPU time goes, kernel by kernel (the graph way of ``bench_decode.py``).

    python benchmarks/profile_step.py --methods hlwq-q5 int4 bf16

For each method, in a process of its own (so one's compiled graphs and pools do
not weigh on the next), a model of ``bench_decode.py`` (``--model``: the
Llama-3-8B-shaped one by default) at ``--batch`` rows (1 by default): a
warm-up call of :class:`hlwq_ops.decode.GraphDecoder` (compiles, tunes,
captures) and a timed one (decode tokens/s), then ``--steps`` replays of the
captured step under ``torch.profiler``, each with the token copy and the
position updates of ``GraphDecoder.generate``'s loop (not its copy into the
output): each kernel's GPU time a step, by name, beside the timed call's step
time, and the linears' times by their place in a layer (q, k, v, o, gate, up,
down; or the groups GraphDecoder compiles at batch 1: q-k-v, o, gate-up, down;
the Llama model only), to set beside ``bench_ops.py``'s isolated ones.
Run it with ``HLWQ_PDL=0`` to see what programmatic dependent launch does in
the model; ``--passes group,glu`` compiles the step with only those of
``GroupProjections``' passes (grouping, the gated down projection, the norm),
``--packed-attention`` with :func:`hlwq_ops.attention.packed_decode_attention`,
``--no-combo-kernels`` without Inductor's combo kernels: A/B within one tree. The
step time less the kernels' ("between kernels") is the time the GPU spent
outside kernels, taken from two runs (the timed call, the profiled
replays). A method that fails prints its error, and the script then exits with
status 1.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import time

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from torchao.quantization.utils import recommended_inductor_config_setter

sys.path.insert(0, os.path.dirname(__file__))
from bench_decode import MODELS, NEW, PROMPT, build  # noqa: E402

from hlwq_ops import grouping  # noqa: E402
from hlwq_ops.attention import packed_decode_attention  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402
from hlwq_ops.kernels import tuning  # noqa: E402
from hlwq_ops.tensor import HLWQTensor  # noqa: E402


# A Llama layer's projections in the order its forward calls them, and the names of each method's linear kernels,
# one launch a linear (HLWQ's split-K sums, launched apart by some tensor-core configs, left out; bf16's cuBLAS kernels
# are named by their tiles, and rotary's float32 SGEMM is not one of them; lm_head's, matched too, comes last)
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")
GROUPED = ("q-k-v", "o", "gate-up", "down")  # (GraphDecoder's at batch 1: GroupProjections' groups, one launch each)
LINEARS = {"hlwq": r"_gemv_kernel|_rs_kernel|_ws_kernel|_wgmma_kernel|_tc_gemv_kernel|_mma_kernel",
           "int4": r"tinygemm", "bf16": r"nvjet|gemv"}


class Passes(CustomGraphPass):
    """Some of :class:`hlwq_ops.GroupProjections`' passes (``grouping.PASSES``), in its order, as Inductor's
    post-grad pass."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, graph) -> None:
        for name, run in grouping.PASSES.items():
            if name in self.names:
                run(graph)

    def uuid(self) -> None:
        return None  # (no caching: a graph compiled with other passes must not come back)


def kernel_times(step, steps: int) -> tuple[dict[str, tuple[float, float]], list[tuple[str, float]]]:
    """Over ``steps`` calls of ``step()`` on the GPU: {kernel name: (us a step, launches a step)}, and the step's
    launches in order as (name, us averaged over the steps), empty where the steps did not launch alike."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    launches = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for e in launches:
        totals[e.name][0] += e.time_range.elapsed_us()
        totals[e.name][1] += 1
    return ({name: (t / steps, n / steps) for name, (t, n) in totals.items()},
            in_order([(e.name, e.time_range.elapsed_us()) for e in launches], steps))


def in_order(launches: list[tuple[str, float]], steps: int) -> list[tuple[str, float]]:
    """A step's launches in order, each one's time averaged over ``steps`` steps that launched the same names."""
    n = len(launches) // steps
    names = [name for name, _ in launches[:n]]
    if n * steps != len(launches) or any(launches[s * n + i][0] != names[i] for s in range(steps) for i in range(n)):
        return []
    return [(names[i], sum(launches[s * n + i][1] for s in range(steps)) / steps) for i in range(n)]


def by_position(sequence: list[tuple[str, float]], pattern: str, per_layer: int) -> list[list[float]]:
    """The times of the launches whose names match ``pattern``, in order, cut into layers of ``per_layer``: a list
    per position in the layer (q, k, v, o, gate, up, down in a Llama layer), its times over the layers. Matches past
    the last whole layer (lm_head) are left out."""
    times = [us for name, us in sequence if re.search(pattern, name)]
    layers = len(times) // per_layer
    return [[times[layer * per_layer + i] for layer in range(layers)] for i in range(per_layer)]


def tuned_for(model: torch.nn.Module, batch: int) -> dict[str, dict]:
    """The tuned configs of the model's quantized linears at this batch (a fresh tuning may pick another tile)."""
    layers = {(*m.weight.shape, m.weight.bits, m.weight.block_size) for m in model.modules()
              if isinstance(m, torch.nn.Linear) and isinstance(m.weight, HLWQTensor)}
    return {key: config for N, K, bits, block in layers
            for key, config in tuning.tuned_choices(batch, N, -(-K // block) * block, bits).items()}


def one(model_name: str, method: str, steps: int, batch: int, packed_attention: bool = False,
        combo_kernels: bool = True, passes: list[str] | None = None) -> dict:
    """Decode step time (a 256-token call after the warm-up's) and its kernels, replaying the captured step as
    ``GraphDecoder.generate`` does (``passes``: only those of ``grouping.PASSES``; all by default)."""
    start = time.perf_counter()
    model, _ = build(model_name, method)
    ids = torch.randint(1, model.config.vocab_size, (batch, PROMPT), device="cuda")
    if passes is not None:  # (GraphDecoder without its own pass compiles with Inductor's config)
        torch._inductor.config.post_grad_custom_post_pass = Passes(passes)
    decoder = GraphDecoder(model, group_projections=passes is None, packed_attention=packed_attention,
                           combo_kernels=combo_kernels)
    decoder.generate(ids, NEW)  # compiles, tunes, captures
    decoder.generate(ids, NEW)
    step_us = 1e6 / decoder.stats.decode_tokens_per_s  # (tokens a second of each row)
    # what generate()'s loop runs a token, in an emptied cache (its layers count the steps themselves: replays past
    # its length index out of it); the positions go on from the prompt's while the keys and values are written from
    # slot 0, which costs the same (the static cache's attention spans its whole length)
    graph, out, token = decoder._graph, decoder._graph_out, decoder._token
    position, row_position = decoder._position, decoder._row_position

    python_state = decoder._python_state()  # (a linear-attention layer's "has a previous state" flags)

    def restart():
        decoder._cache.reset()
        decoder._set_python_state(python_state)  # (a step after a prompt, as the graph was captured)
        position.fill_(PROMPT)
        row_position.fill_(PROMPT)

    def advance():
        position.add_(1)
        row_position.add_(1)

    def step():
        graph.replay()
        token.copy_(out)
        advance()

    restart()
    (rows, sequence), mode = kernel_times(step, steps), "graph"
    if sum(n for _, n in rows.values()) < 50:  # the profiler did not see into the graph's replays
        restart()
        with packed_decode_attention(model) if packed_attention else contextlib.nullcontext():  # (as traced)
            rows, sequence = kernel_times(lambda: (decoder._step(*decoder._inputs), advance()), steps)
        mode = "compiled step without its graph (the graph's kernels were not seen)"
    return dict(model=model_name, method=method, batch=batch, packed_attention=packed_attention,
                combo_kernels=combo_kernels,
                passes=list(grouping.PASSES) if passes is None else passes, step_us=step_us, mode=mode, kernels=rows,
                sequence=sequence, layers=model.config.num_hidden_layers, wall_s=time.perf_counter() - start,
                tuned=tuned_for(model, batch))


def report(result: dict, top: int) -> None:
    rows = sorted(result["kernels"].items(), key=lambda kv: -kv[1][0])
    busy = sum(t for t, _ in result["kernels"].values())
    launches = sum(n for _, n in result["kernels"].values())
    attention = "packed" if result.get("packed_attention", False) else "transformers' SDPA"
    combo = "" if result.get("combo_kernels", False) else "; no combo kernels"  # (none before session 72)
    print(f"\n{result['model']}, {result['method']} at batch {result['batch']} ({result['mode']}; {attention} "
          f"attention; passes {'+'.join(result.get('passes', grouping.PASSES))}{combo}): "
          f"step {result['step_us']:.1f} us "
          f"(decode tok/s {1e6 * result['batch'] / result['step_us']:.1f}); "
          f"kernels {busy:.1f} us in {launches:.0f} launches a step; "
          f"between kernels {result['step_us'] - busy:.1f} us; "
          f"the process's work {result['wall_s']:.0f} s")
    print(f"{'us/step':>9} {'n/step':>7} {'us each':>8}  kernel")
    for name, (t, n) in rows[:top]:
        print(f"{t:9.1f} {n:7.1f} {t / max(n, 1e-9):8.2f}  {name[:110]}")
    if result["model"] != "llama3-8b":
        return  # (PROJECTIONS is a Llama layer's)
    pattern = LINEARS[result["method"].split("-")[0]]
    launches = sum(bool(re.search(pattern, name)) for name, _ in result["sequence"])
    names = {len(GROUPED): GROUPED, len(PROJECTIONS): PROJECTIONS}.get(launches // result["layers"])
    positions = by_position(result["sequence"], pattern, len(names)) if names else []
    if names is None:
        print(f"({launches} linear launches in {result['layers']} layers: neither grouped nor one a projection; "
              "no per-layer table)")
    elif positions and positions[0]:
        print("the linears by their place in a layer, us (mean, min-max over the layers):")
        for name, times in zip(names, positions):
            print(f"  {name:>5} {sum(times) / len(times):8.2f} ({min(times):.2f}-{max(times):.2f})")
    elif not result["sequence"]:
        print("(the steps did not launch the same kernels in the same order: no per-layer table)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama3-8b", choices=list(MODELS))
    p.add_argument("--methods", nargs="+", default=["hlwq-q5", "int4", "bf16"])
    p.add_argument("--steps", type=int, default=32, help="decode steps profiled (1 to 255)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--inductor-recommended", action="store_true",
                   help="torchao's recommended Inductor settings (coordinate descent tuning, ...) for every method; "
                        "torchao's int4 config applies them itself")
    p.add_argument("--packed-attention", action="store_true",
                   help="GraphDecoder(packed_attention=True): the query heads of each key/value head as its queries, "
                        "instead of transformers' SDPA attention repeating the cache's heads every step")
    p.add_argument("--no-combo-kernels", action="store_true",
                   help="GraphDecoder(combo_kernels=False): without Inductor's combo kernels")
    p.add_argument("--inductor", action="append", default=[], metavar="NAME=VALUE",
                   help="set torch._inductor.config.NAME (a Python literal) for every method, e.g. "
                        "coordinate_descent_tuning=True; GraphDecoder's own options (combo_kernels, the passes) "
                        "win over it; repeatable")
    p.add_argument("--passes", help=f"compile with only these of GroupProjections' passes, comma-separated: any of "
                                    f"{', '.join(grouping.PASSES)} (default: GraphDecoder's, all)")
    p.add_argument("--json", help="write every method's per-step kernel table here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child process: this method, JSON on stdout's last line
    a = p.parse_args()
    passes = None if a.passes is None else a.passes.split(",")
    for setting in a.inductor:
        name, _, value = setting.partition("=")
        if not hasattr(torch._inductor.config, name) or not value:
            p.error(f"--inductor takes NAME=VALUE with NAME a setting of torch._inductor.config, got {setting}")
    if passes is not None and not set(passes) <= set(grouping.PASSES):
        p.error(f"--passes takes names of {', '.join(grouping.PASSES)}, got {a.passes}")
    if not 1 <= a.steps < NEW:
        p.error(f"--steps must be 1 to {NEW - 1} (the captured cache holds {NEW} new tokens), got {a.steps}")
    if a.one:
        if a.inductor_recommended:
            recommended_inductor_config_setter()
        for setting in a.inductor:
            name, value = setting.split("=", 1)
            setattr(torch._inductor.config, name, ast.literal_eval(value))
        result = one(a.model, a.one, a.steps, a.batch, a.packed_attention, not a.no_combo_kernels, passes)
        print(json.dumps(result), flush=True)
        return
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    results, failed = [], []
    for method in a.methods:
        child = [sys.executable, __file__, "--one", method, "--model", a.model, "--steps", str(a.steps),
                 "--batch", str(a.batch)]
        child += ["--inductor-recommended"] if a.inductor_recommended else []
        child += [arg for setting in a.inductor for arg in ("--inductor", setting)]
        child += ["--packed-attention"] if a.packed_attention else []
        child += ["--no-combo-kernels"] if a.no_combo_kernels else []
        child += ["--passes", a.passes] if a.passes is not None else []
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
