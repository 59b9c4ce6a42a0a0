"""Session 37 run 5: run 2's non-repeatable generate() on session 36's library (3e7a511, .diag/old): bf16 and Q5
compiled in one process, one 256-token call each, then Q5 32-token calls repeated."""
import sys
import time

import torch
from transformers import StaticCache

sys.path.insert(0, ".diag/old/benchmarks")
import bench_decode as B  # noqa: E402
import hlwq_ops  # noqa: E402

print("hlwq_ops from", hlwq_ops.__file__, flush=True)
ids = torch.randint(0, 1000, (1, B.PROMPT), device="cuda")
models = {}
t0 = time.perf_counter()
with torch.no_grad():
    for method in ("bf16", "hlwq-q5"):
        model, _ = B.build("llama3-8b", method)
        cache = StaticCache(config=model.config, max_cache_len=B.PROMPT + B.NEW)
        model.generate(ids, max_new_tokens=B.NEW, do_sample=False, past_key_values=cache)
        models[method] = (model, cache)
        print(f"{method} ready at {time.perf_counter() - t0:.0f} s", flush=True)
    model, cache = models["hlwq-q5"]
    toks = []
    for i in range(4):
        cache.reset()
        toks.append(model.generate(ids, max_new_tokens=32, do_sample=False, past_key_values=cache)[0, B.PROMPT:])
        d = (toks[i] != toks[0]).nonzero()
        print(f"Q5 call {i} vs 0:", "same" if d.numel() == 0 else f"first differs at token {d[0].item()}", flush=True)
