"""Session 54, call 5 (benchmarks/NOTES.md, session 54): call 4's plain step gave other tokens in its second round
than in its first. Which part repeats bit for bit? One Llama-3-8B-shaped Q5 model (random weights):
(1) each projection shape's F.linear at M = 1 and 128, three calls (the first tunes), the last two compared;
(2) the eager 128-token prompt's last logits, twice; (3) GraphDecoder's greedy tokens (32 new), in two decoders
compiled afresh, then a third call of the second decoder. From benchmarks/:
    python results/h100_s54_call5_determinism.py
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402

model, _ = build("llama3-8b", "hlwq-q5")
layer = model.model.layers[0]
with torch.no_grad():
    for name, mod in [("q", layer.self_attn.q_proj), ("k", layer.self_attn.k_proj), ("gate", layer.mlp.gate_proj),
                      ("down", layer.mlp.down_proj)]:
        for M in (1, 128):
            x = torch.randn(M, mod.weight.shape[1], device="cuda", dtype=torch.bfloat16)
            ys = [F.linear(x, mod.weight) for _ in range(3)]
            print(f"op {name} {tuple(mod.weight.shape)} M={M}: equal {torch.equal(ys[1], ys[2])}, "
                  f"max diff {(ys[1].float() - ys[2].float()).abs().max().item():.3g}", flush=True)
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    logits = [model(ids).logits[:, -1].float() for _ in range(2)]
    print(f"prompt logits: equal {torch.equal(*logits)}, max diff {(logits[0] - logits[1]).abs().max().item():.3g}",
          flush=True)
outs = []
for decoder_no in range(2):
    torch._dynamo.reset()
    decoder = GraphDecoder(model)
    decoder.generate(ids, 32)
    outs.append(decoder.generate(ids, 32))
outs.append(decoder.generate(ids, 32))
for i, out in enumerate(outs[1:], 1):
    diff = (out != outs[0]).nonzero()
    first = diff[0, 1].item() - PROMPT if len(diff) else None
    print(f"tokens, run {i} against run 0: equal {torch.equal(out, outs[0])}, first differing new token {first}")
print("run 0:", outs[0][0, PROMPT:].tolist())
print("run 1:", outs[1][0, PROMPT:].tolist())
