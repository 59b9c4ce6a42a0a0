"""Session 56, call 3 (benchmarks/NOTES.md, session 56), Llama-3-8B shape, batch 1, 128-token prompt, 256 new tokens.

1. ``GraphDecoder(model)`` (compiled, grouped, in a CUDA graph) with SDPA free to pick cuDNN's attention (torch's
   default) and with ``torch.backends.cuda.enable_cudnn_sdp(False)``, alternating, twice each: decode tok/s of calls 2
   and 3, and where calls 2 and 3 part from call 1.
2. ``model.generate(..., cache_implementation="static")`` (a new cache per call: transformers compiles the step;
   this docstring first said Inductor ran it without CUDA graphs, which RESULTS 56d corrects) with and without
   ``GroupProjections`` in Inductor's config, alternating, twice each (``bench_decode.time_generate``: a warm-up call,
   then the faster of two); bf16's once.
"""

import json
import sys
from pathlib import Path

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import NEW, PROMPT, build, time_generate  # noqa: E402

from hlwq_ops import GroupProjections  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402


class CountGroups(CustomGraphPass):
    def __init__(self):
        self.groups = []

    def __call__(self, graph):
        self.groups.append(sum(n.target is torch.ops.hlwq.linear_group.default for n in graph.nodes))

    def uuid(self):
        return None


def first_difference(a, b):
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def graph_round(model, ids, cudnn: bool) -> dict:
    torch._dynamo.reset()
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    try:
        decoder = GraphDecoder(model)
        outs, rates = [], []
        for _ in range(3):
            outs.append(decoder.generate(ids, NEW)[0, PROMPT:])
            rates.append(decoder.stats.decode_tokens_per_s)
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
    return dict(part="graph", cudnn=cudnn, tok_s=rates[1:], differs_from_first_call_at=[
        first_difference(o, outs[0]) for o in outs[1:]], tokens=outs[0].tolist())


def generate_round(model, ids, grouped: bool) -> dict:
    torch._dynamo.reset()
    count = CountGroups()
    passes = GroupProjections(then=count) if grouped else count
    with torch._inductor.config.patch(post_grad_custom_post_pass=passes):
        rate = time_generate(model, ids, repeats=2)
    return dict(part="generate", grouped=grouped, tok_s=rate, groups_per_graph=count.groups)


def main():
    out = Path(sys.argv[1])
    rows = []

    def record(row):
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "tokens"}), flush=True)
        out.write_text(json.dumps(rows))

    model, _ = build("llama3-8b", "hlwq-q5")
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    for cudnn in (True, False, True, False):
        record(graph_round(model, ids, cudnn))
    for grouped in (False, True, False, True):
        record(generate_round(model, ids, grouped))
    del model
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    model, _ = build("llama3-8b", "bf16")
    record(dict(part="generate", method="bf16", tok_s=time_generate(model, ids, repeats=2)))


if __name__ == "__main__":
    main()
