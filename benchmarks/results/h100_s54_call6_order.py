"""Session 54, call 6: plain, stacked, plain GraphDecoder runs (32 new tokens) on one Q5 model; do the plain runs'
tokens match, and where do they first differ? From benchmarks/:  python results/h100_s54_call6_order.py"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import PROMPT, build  # noqa: E402
from diag_stacked import stack, unstack  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402

model, _ = build("llama3-8b", "hlwq-q5")
ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
outs = {}
for name in ("plain0", "stacked", "plain1"):
    originals = stack(model) if name == "stacked" else None
    torch._dynamo.reset()
    decoder = GraphDecoder(model)
    decoder.generate(ids, 32)
    outs[name] = decoder.generate(ids, 32)[0, PROMPT:]
    if originals:
        unstack(originals)
    print(name, outs[name].tolist(), flush=True)
for name in ("stacked", "plain1"):
    diff = (outs[name] != outs["plain0"]).nonzero()
    print(f"{name} against plain0: first differing new token {diff[0].item() if len(diff) else None}", flush=True)
