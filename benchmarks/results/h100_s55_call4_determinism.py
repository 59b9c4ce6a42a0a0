"""Session 55, call 4 (benchmarks/NOTES.md, session 55): which part of a decode step does not repeat.

1. The GEMV in CUDA graphs: Q5 weights of four Llama-3-8B projection shapes (four layers' worth each, distinct),
   one graph calling ``F.linear`` on each in turn at M = 1, replayed 200 times with the activations alternating
   between two fixed vectors; every replay's outputs against the first replay's of the same vector, bit for bit.
2. The Q5 model's eager decode (``generate()``, dynamic cache, no compile), 96 new tokens, twice.
3. ``GraphDecoder(model, compile=False)`` (the eager step in a CUDA graph, no Inductor): three calls.
4. ``GraphDecoder(model)`` (compiled, as calls 1-3 ran it): three calls.
Prints where each run's tokens part from its first, and the GEMV's mismatching replays per shape."""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import PROMPT, build  # noqa: E402

import hlwq_ops  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402


def first_difference(a, b):
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def gemv_replays(N, K, layers=4, replays=200):
    torch.manual_seed(N + K)
    weights = [hlwq_ops.HLWQTensor.from_hp(torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02, 5)
               for _ in range(layers)]
    xs = [torch.randn(1, K, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    x = xs[0].clone()
    for w in weights:
        F.linear(x, w)  # tunes, plans
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [F.linear(x, w) for w in weights]
    first, bad = {}, [0, 0]
    for i in range(replays):
        x.copy_(xs[i % 2])
        graph.replay()
        got = torch.cat(outs, -1).clone()
        ref = first.setdefault(i % 2, got)
        bad[i % 2] += not torch.equal(got, ref)
    torch.cuda.synchronize()
    return bad


report = {}
for N, K in ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)):
    report[f"gemv {N}x{K} mismatching replays (x1, x2) of 100 each"] = gemv_replays(N, K)
print(json.dumps(report), flush=True)
model, _ = build("llama3-8b", "hlwq-q5")
ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
runs = {}
with torch.no_grad():
    for i in range(2):
        runs[f"eager{i}"] = model.generate(ids, max_new_tokens=96, do_sample=False)[0, PROMPT:]
for compiled in (False, True):
    torch._dynamo.reset()
    decoder = GraphDecoder(model, compile=compiled, group_projections=False)
    for i in range(3):
        runs[f"graph{'_compiled' if compiled else '_eager'}{i}"] = decoder.generate(ids, 96)[0, PROMPT:]
    del decoder
for kind in ("eager", "graph_eager", "graph_compiled"):
    report[kind + " differs from its first call at"] = [first_difference(runs[f"{kind}{i}"], runs[f"{kind}0"])
                                                        for i in range(3) if f"{kind}{i}" in runs]
report["tokens"] = {k: v.tolist() for k, v in runs.items()}
print(json.dumps({k: v for k, v in report.items() if k != "tokens"}), flush=True)
Path(sys.argv[1]).write_text(json.dumps(report))
