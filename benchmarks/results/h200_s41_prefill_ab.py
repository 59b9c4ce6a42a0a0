"""Session 41: eager forwards of the Llama-3-8B shape (batch 1; 128, 8 and 1 tokens, no cache) in ONE process, with
kernels.linear's call signatures resolved ("resolved", the library as it is) and never resolved ("unresolved":
kernels._resolve a no-op, the store emptied), five rounds alternating, plans cleared before each mode. Q5 and bf16
(the control: no HLWQ calls, the same code in both modes)."""
import os, statistics, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../benchmarks"))
from bench_decode import build  # noqa: E402
from hlwq_ops import kernels  # noqa: E402
from hlwq_ops.kernels import launch as L  # noqa: E402

resolve = kernels._resolve


def forward_ms(model, ids, n=5):
    walls = []
    for _ in range(n):
        start = time.perf_counter()
        model(ids, use_cache=False)
        torch.cuda.synchronize()
        walls.append(1e3 * (time.perf_counter() - start))
    return statistics.median(walls)


print(torch.cuda.get_device_name(), torch.__version__, time.strftime("%Y-%m-%d %H:%M"), flush=True)
for method in sys.argv[1:]:
    model, _ = build("llama3-8b", method)
    print(f"{method} built", flush=True)
    for tokens in (128, 8, 1):
        ids = torch.randint(1, model.config.vocab_size, (1, tokens), device="cuda")
        rows = {"resolved": [], "unresolved": []}
        with torch.no_grad():
            for _ in range(3):  # (tunes each new shape)
                model(ids, use_cache=False)
            for rnd in range(5):
                for mode in ("resolved", "unresolved") if rnd % 2 == 0 else ("unresolved", "resolved"):
                    kernels._resolve = resolve if mode == "resolved" else (lambda *args, **kwargs: None)
                    L.clear_plans()
                    for _ in range(2):
                        model(ids, use_cache=False)
                    torch.cuda.synchronize()
                    rows[mode].append(forward_ms(model, ids))
        kernels._resolve = resolve
        print(f"{method} {tokens} tokens: " + "; ".join(
            f"{m} " + " ".join(f"{v:.1f}" for v in r) + f" (median {statistics.median(r):.1f})"
            for m, r in rows.items()) + " ms", flush=True)
    del model
    torch.cuda.empty_cache()
