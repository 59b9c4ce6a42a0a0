"""Session 37 run 4: where generate()'s call-to-call difference (run 2, token 24) comes from. The 8B-shaped Q5
model: its eager forward of one 128-token prompt three times (the prefill, M = 128), then eager generate() (no
compile, dynamic cache) of 32 tokens twice, then generate() with the static cache (compiled decode) twice."""
import sys

import torch
from transformers import StaticCache

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402


def first_diff(a, b):
    d = (a != b).nonzero()
    return "same" if d.numel() == 0 else f"first differs at token {d[0].item()}"


model, _ = B.build("llama3-8b", "hlwq-q5")
ids = torch.randint(0, 1000, (1, B.PROMPT), device="cuda")
with torch.no_grad():
    outs = [model(ids).logits.clone() for _ in range(3)]
    for i in (1, 2):
        d = outs[i] != outs[0]
        print(f"eager forward {i} vs 0: " + ("same" if not d.any() else
              f"{d.sum().item()} logits differ, max abs {(outs[i] - outs[0]).abs().max().item():.3g}"), flush=True)
    eager = [model.generate(ids, max_new_tokens=32, do_sample=False)[0, B.PROMPT:] for _ in range(2)]
    print("eager generate:", first_diff(*eager), flush=True)
    cache = StaticCache(config=model.config, max_cache_len=B.PROMPT + 32)
    static = []
    for _ in range(3):
        cache.reset()
        static.append(model.generate(ids, max_new_tokens=32, do_sample=False, past_key_values=cache)[0, B.PROMPT:])
    print("static generate 1 vs 2:", first_diff(static[1], static[2]), "| 0 vs 1:", first_diff(static[0], static[1]),
          "| eager vs static 2:", first_diff(eager[0], static[2]), flush=True)
