"""Session 38 run 5: the decode step of an 8-layer Llama-3-8B-shaped model (batch 1, static cache, one token a step)
under torch.compile's default mode and under mode="reduce-overhead" (CUDA graph trees), bf16 / torchao int4 / HLWQ Q5
in one process, a dynamo reset before each compile. (Run 6: bf16 and Q5 only, reduce-overhead first; run 5, with
torchao int4 built too, printed nothing in 480 s.) Wall ms a step over 64 steps, the median of three such runs."""
import sys
import time

import torch
from torch._dynamo.utils import counters
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402

LAYERS, STEPS = 8, 64


def llama_8_layers():
    return LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=LAYERS,
                                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                        max_position_embeddings=8192, rope_theta=500000.0))


B.MODELS["llama3-8b"] = llama_8_layers


def time_steps(model, label, mode):
    torch._dynamo.reset()
    counters.clear()
    cache = StaticCache(config=model.config, max_cache_len=STEPS + 16)
    fwd = torch.compile(model.forward, mode=mode)
    tok = torch.randint(0, 1000, (1, 1), device="cuda")
    logits = []

    def run(n):
        cache.reset()
        for p in range(n):
            pos = torch.tensor([p], device="cuda")
            out = fwd(input_ids=tok, cache_position=pos, position_ids=pos[None], past_key_values=cache,
                      use_cache=True).logits
        logits.append(out.float().clone())

    t0 = time.perf_counter()
    run(4)
    run(4)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(STEPS)
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t0) / STEPS)
    skips = dict(counters["inductor"]).get("cudagraph_skips", 0)
    print(f"{mode:16s} {label:6s} ms/step {sorted(times)[1]:.3f} (runs {', '.join(f'{t:.3f}' for t in times)}); "
          f"compile+warm-up {compile_s:.0f} s; cudagraph skips {skips}; last logits finite "
          f"{bool(torch.isfinite(logits[-1]).all())}, equal over the timed runs "
          f"{all(torch.equal(logits[-1], lg) for lg in logits[-3:])}", flush=True)
    return sorted(times)[1]


with torch.no_grad():
    t0 = time.perf_counter()
    models = {}
    for m in ("bf16", "hlwq-q5"):
        models[m] = B.build("llama3-8b", m)[0]
        print(f"{m} built at {time.perf_counter() - t0:.0f} s", flush=True)
    res = {}
    for mode in ("reduce-overhead", "default"):
        for name, model in models.items():
            res[(mode, name)] = time_steps(model, name, mode)
for mode in ("reduce-overhead", "default"):
    if (mode, "hlwq-q5") not in res:
        continue
    b = res[(mode, "bf16")]
    print(mode, {n: f"{res[(mode, n)]:.3f} ms ({b / res[(mode, n)]:.2f}x bf16 tok/s)" for n in models})
