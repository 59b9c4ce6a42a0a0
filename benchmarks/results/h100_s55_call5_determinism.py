"""Session 55, call 5 (benchmarks/NOTES.md, session 55): call 4's decoders at call 3's length.

``GraphDecoder(model, compile=False)`` (the eager step in a CUDA graph) and ``GraphDecoder(model)`` (compiled),
three calls each of 256 new tokens (call 4 ran 96), the Q5 model ungrouped. Prints where each call's tokens part
from its decoder's first call's."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402


def first_difference(a, b):
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


report = {}
model, _ = build("llama3-8b", "hlwq-q5")
ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
runs = {}
for compiled in (False, True):
    torch._dynamo.reset()
    decoder = GraphDecoder(model, compile=compiled, group_projections=False)
    for i in range(3):
        runs[f"graph{'_compiled' if compiled else '_eager'}{i}"] = decoder.generate(ids, 256)[0, PROMPT:]
    del decoder
for kind in ("graph_eager", "graph_compiled"):
    report[kind + " differs from its first call at"] = [first_difference(runs[f"{kind}{i}"], runs[f"{kind}0"])
                                                        for i in range(3) if f"{kind}{i}" in runs]
report["tokens"] = {k: v.tolist() for k, v in runs.items()}
print(json.dumps({k: v for k, v in report.items() if k != "tokens"}), flush=True)
Path(sys.argv[1]).write_text(json.dumps(report))
