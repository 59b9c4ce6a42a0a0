"""Session 56, call 4 (benchmarks/NOTES.md, session 56): does the compiled GraphDecoder repeat without cuDNN's
attention when nothing compiled with it before? Call 3 turned cuDNN off between rounds of one process, and
AOTAutograd's cache key (torch 2.11-2.13) does not hold SDPA's backend flags, so those rounds may have got the
first round's graph back.

One process, its own empty cache directory (set by the script), Llama-3-8B-shaped Q5, batch 1, 256 new tokens,
``GraphDecoder(model)`` three calls a round: (1) ``enable_cudnn_sdp(False)`` before the first compile; (2) cuDNN on,
the caches on (what a later compile in the process gets); (3) cuDNN on, AOTAutograd's and Inductor's FX graph caches
off. Per round: tok/s of calls 2-3, where calls 2 and 3 part from call 1, and which SDPA op the compiled step calls.
"""

import json
import sys
from pathlib import Path

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import NEW, PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402


class AttentionOps(CustomGraphPass):
    """The SDPA ops each compiled graph calls. A pass with a fixed uuid, so that the caches stay on: it runs where
    Inductor compiles, not where a cache hands a graph back (then ``seen`` stays empty)."""

    def __init__(self):
        self.seen = []

    def __call__(self, graph):
        self.seen.append(sorted({str(n.target) for n in graph.nodes if "attention" in str(n.target)}))

    def uuid(self):
        return "session-56-attention-ops"


def first_difference(a, b):
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def round_(model, ids, cudnn: bool, caches: bool) -> dict:
    torch._dynamo.reset()
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    ops = AttentionOps()
    patches = {"post_grad_custom_post_pass": ops, "fx_graph_cache": caches}
    with torch._inductor.config.patch(patches), torch._functorch.config.patch(enable_autograd_cache=caches):
        decoder = GraphDecoder(model)  # (its GroupProjections runs ops after itself)
        outs, rates = [], []
        for _ in range(3):
            outs.append(decoder.generate(ids, NEW)[0, PROMPT:])
            rates.append(decoder.stats.decode_tokens_per_s)
    return dict(cudnn=cudnn, caches=caches, tok_s=rates[1:], attention_ops=ops.seen,
                differs_from_first_call_at=[first_difference(o, outs[0]) for o in outs[1:]])


def main():
    out, rows = Path(sys.argv[1]), []
    model, _ = build("llama3-8b", "hlwq-q5")
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    for cudnn, caches in ((False, True), (True, True), (True, False)):
        rows.append(round_(model, ids, cudnn, caches))
        print(json.dumps(rows[-1]), flush=True)
        out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
