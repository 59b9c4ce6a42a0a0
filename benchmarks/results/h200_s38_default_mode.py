"""Session 38 run 4 (NOTES 37 Next 2): session 37's op change as a whole model under torch.compile's default mode
(no CUDA graphs, so every HLWQ projection calls the op through the dispatcher each step). An 8-layer Llama-3-8B-shaped
model, batch 1, the decode step (one token, static cache) compiled with torch.compile(model.forward) and no CUDA
graphs; Q5 with session 37's routing (hlwq.linear_inference, "new") and with every compiled call on hlwq.linear
("old": session 36's routing patched back in), alternating in one process, a dynamo reset before each compile; bf16
once for scale. Wall ms a step over 64 steps, the median of three such runs."""
import sys
import time

import torch
from torch._inductor import config as inductor_config
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

sys.path.insert(0, "benchmarks")
import bench_decode as B  # noqa: E402
from hlwq_ops import ops  # noqa: E402

LAYERS, STEPS = 8, 64


def llama_8_layers():
    return LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=LAYERS,
                                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                        max_position_embeddings=8192, rope_theta=500000.0))


B.MODELS["llama3-8b"] = llama_8_layers
new_call = ops.linear_call


def old_call(x, qdata, scale, bias, bits, block_size, K, codebook=None):
    """Session 36's routing: the direct path in plain eager, hlwq.linear everywhere else."""
    if ops._plain_eager(x, qdata, bias):
        return ops._linear_cuda(x, qdata, scale, bias, bits, block_size, K, codebook)
    return ops.linear(x, qdata, scale, bias, bits, block_size, K, codebook)


seen = []


def record_ops(graph):
    seen.append(sorted({str(n.target) for n in graph.nodes if "hlwq" in str(n.target)}))


def time_steps(model, label):
    torch._dynamo.reset()
    seen.clear()
    cache = StaticCache(config=model.config, max_cache_len=STEPS + 16)
    fwd = torch.compile(model.forward)
    tok = torch.randint(0, 1000, (1, 1), device="cuda")

    def run(n):
        cache.reset()
        for p in range(n):
            pos = torch.tensor([p], device="cuda")
            fwd(input_ids=tok, cache_position=pos, position_ids=pos[None], past_key_values=cache, use_cache=True)

    t0 = time.perf_counter()
    with inductor_config.patch(post_grad_custom_post_pass=record_ops):
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
    print(f"{label:10s} ms/step {sorted(times)[1]:.3f} (runs {', '.join(f'{t:.3f}' for t in times)}); "
          f"compile+warm-up {compile_s:.0f} s; hlwq ops in the graphs: {seen}", flush=True)
    return sorted(times)[1]


with torch.no_grad():
    bf16, _ = B.build("llama3-8b", "bf16")
    q5, _ = B.build("llama3-8b", "hlwq-q5")
    res = {"bf16": time_steps(bf16, "bf16")}
    del bf16
    for r in range(2):
        for label, call in (("q5 new", new_call), ("q5 old", old_call)):
            ops.linear_call = call
            res.setdefault(label, []).append(time_steps(q5, f"{label} r{r}"))
    ops.linear_call = new_call
print({k: v for k, v in res.items()})
print(f"per HLWQ projection ({7 * LAYERS} a step): old - new = "
      f"{1e3 * (sum(res['q5 old']) - sum(res['q5 new'])) / 2 / (7 * LAYERS):.1f} us")
