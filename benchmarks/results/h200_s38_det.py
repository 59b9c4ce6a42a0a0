"""Session 38 run 1: the non-repeatable generate() (NOTES 37 Next 1). bf16 and Q5 8B-shaped models compiled in one
process (as session 37 run 5), then Q5 32-token generate() calls repeated with their logits compared step by step;
every tuning decision not served from the tuning cache is logged (with whether a CUDA graph was being captured), and
the split-K arrival counters are checked for non-zero values between calls."""
import sys
import time

import torch
from transformers import StaticCache

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402
from hlwq_ops.kernels import common, tuning  # noqa: E402

log = []
orig = tuning.config_for


def logged(kernel, M, N, k_pad, bits, weight, run):
    key = kernel + tuning._layer_key(M, N, k_pad, bits)
    cached = key in tuning._TUNED
    cfg = orig(kernel, M, N, k_pad, bits, weight, run)
    if not cached:
        log.append((key, torch.cuda.is_current_stream_capturing(), key in tuning._TUNED, cfg))
        print("TUNE", log[-1], flush=True)
    return cfg


tuning.config_for = logged


def counters(tag):
    torch.cuda.synchronize()
    buf = common.counter_buffer(torch.device("cuda"))
    nz = 0 if buf is None else int((buf != 0).sum())
    print(f"[{tag}] non-zero counters: {nz}; cursor {common._CURSOR.get(torch.device('cuda'))}", flush=True)
    if nz:
        idx = (buf != 0).nonzero().flatten()[:20].tolist()
        print("   at", idx, "values", buf[idx].tolist(), flush=True)


torch.manual_seed(1)
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
        counters(method + " first call")
    for method in ("hlwq-q5", "bf16"):
        model, cache = models[method]
        calls = []
        for i in range(6):
            cache.reset()
            out = model.generate(ids, max_new_tokens=32, do_sample=False, past_key_values=cache,
                                 return_dict_in_generate=True, output_logits=True)
            toks = out.sequences[0, B.PROMPT:]
            logits = torch.stack([lg[0].float() for lg in out.logits])  # (steps, vocab)
            calls.append((toks, logits))
            d = (toks != calls[0][0]).nonzero()
            ld = (logits != calls[0][1]).any(-1).nonzero()
            first_l = ld[0].item() if ld.numel() else None
            mag = "" if first_l is None else \
                f", max |dlogit| there {(logits[first_l] - calls[0][1][first_l]).abs().max().item():.3g}" \
                f" (logit scale {calls[0][1][first_l].abs().max().item():.3g}; top-2 gap in call 0 " \
                f"{(lambda t: (t[0] - t[1]).item())(calls[0][1][first_l].topk(2).values):.3g})"
            print(f"{method} call {i} vs 0: tokens " + ("same" if d.numel() == 0 else f"differ from {d[0].item()}")
                  + f"; logits first differ at step {first_l}{mag}", flush=True)
            if method == "hlwq-q5":
                counters(f"after Q5 call {i}")
print("tuning decisions not from the cache:", len(log))
print("captured with an untuned key:", [x for x in log if x[1]])
