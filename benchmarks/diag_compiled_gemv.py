"""``hlwq.linear_compiled`` (``HLWQ_COMPILED_GEMV``) on a GPU, in one process:

a. the GEMV with plain stores (what Inductor launches) against its inline-PTX stores (what eager calls launch), M = 1,
   Q5, the six Llama-3-8B / Qwen3.5-9B shapes, each timed in a CUDA graph over weights past L2, alternating;
b. ``torch.compile`` in its default mode, the decode step of a LAYERS-layer Llama-3-8B-shaped model (default 8):
   bf16, then Q5 through the opaque ``hlwq.linear_inference`` ("old") and through ``hlwq.linear_compiled`` ("new"),
   alternating, with the graphs' ops and the two routes' logits compared;
c. the same model's decode as a user runs it: ``generate()`` with a static cache (CUDA graphs) and
   ``hlwq_ops.decode.GraphDecoder`` (the compiled step in one CUDA graph), batch 1, bf16 then Q5 with the flag off
   and on, twice, and whether the two routes' tokens agree.

Parts a and b ran in session 42 (``benchmarks/RESULTS.md`` 42d; b's old route cut off by its time limit), c with 2
layers in session 46 (section 0 "Session 46", 46c). Each route compiles in fresh caches: the flag, changed within
the process, does not tag the compile caches. Each compile prints its time and, of it, what Triton's front end
took making kernels' TTIR in this process (torch's mutation analysis of a user kernel makes it five times per call
site: ``results/cpu_s43_compile_profile.log``).
``python benchmarks/diag_compiled_gemv.py [a|b|c|abc] [LAYERS]`` (LAYERS: of the Llama-3-8B-shaped model, default 8;
part c with the flag on compiles four times, minutes each at 8 layers).
"""
import functools
import os
import sys
import time

import torch
from torch._inductor import config as inductor_config
from torch._inductor.utils import fresh_cache
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_decode as B  # noqa: E402
from hlwq_ops import kernels  # noqa: E402
from hlwq_ops.codebook import codebook  # noqa: E402
from hlwq_ops.decode import cache_argument  # noqa: E402
from hlwq_ops.kernels import tuning  # noqa: E402
from hlwq_ops.kernels.common import arrival_counters  # noqa: E402
from hlwq_ops.kernels.gemv import gemv_plan  # noqa: E402
from hlwq_ops.kernels.launch import config_key  # noqa: E402

PART = sys.argv[1] if len(sys.argv) > 1 else "abc"
dev = torch.device("cuda")


def store_variants():
    table = codebook(5, dev)
    for N, K in ((4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (12288, 4096), (4096, 12288)):
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02
        q, s = torch.ops.hlwq.quantize(w, 5, 128)
        kernels.note_weight(q, s, 5, 128)
        x = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
        ref = torch.nn.functional.linear(x, torch.ops.hlwq.dequantize(q, s, 5, 128, K, torch.bfloat16))
        y_eager = kernels.linear(x, q, s, None, 5, 128, K, None)  # tunes
        config = tuning.tuned("gemv", 1, N, K, 5, dev)

        def make(traced):
            def run(config, qq, ss):
                plan = gemv_plan(1, K, N, K, 5, 128, config_key(config), True, False, False, dev, False,
                                 (x.stride(0), qq.stride(0) // 4, ss.stride(0)), traced=traced)
                out = torch.empty(plan.out_shape, device=dev, dtype=torch.bfloat16)
                ws = torch.empty(plan.ws_shape, device=dev) if plan.ws_shape else table
                cnt = arrival_counters(dev, plan.counters) if plan.counters else table
                plan.launch(x, qq if traced else qq.view(torch.int32), ss, table, table, out, ws, cnt)
                return out
            return run

        plain, asm = make(True), make(False)
        y_plain = plain(config, q, s)
        torch.cuda.synchronize()
        weights = tuning._weight_set(q, s)
        t = {"asm": [], "plain": []}
        for _ in range(3):
            t["asm"].append(1e3 * tuning._time_over(asm, config, weights, ms=2.0))
            t["plain"].append(1e3 * tuning._time_over(plain, config, weights, ms=2.0))
        del weights
        err = ((y_eager.float() - ref.float()).norm() / ref.float().norm()).item()
        print(f"{N}x{K} config {config}: asm {sorted(t['asm'])[1]:.2f} us ({', '.join(f'{v:.2f}' for v in t['asm'])}) "
              f"plain {sorted(t['plain'])[1]:.2f} us ({', '.join(f'{v:.2f}' for v in t['plain'])}); "
              f"plain == eager {torch.equal(y_plain, y_eager)}; rel err vs dequant {err:.4f}", flush=True)


LAYERS, STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 8, 64
TTIR = {"calls": 0, "s": 0.0}  # ASTSource.make_ir in this process (not in Inductor's compile workers)
_make_ir = ASTSource.make_ir


@functools.wraps(_make_ir)  # torch picks make_ir's arguments by its signature's length
def _timed_make_ir(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return _make_ir(self, *args, **kwargs)
    finally:
        TTIR["calls"] += 1
        TTIR["s"] += time.perf_counter() - start


ASTSource.make_ir = _timed_make_ir


def compile_note(seconds: float) -> str:
    """``seconds`` of compiling and warming up, with the TTIR made since the last note."""
    note = f"compile+warm-up {seconds:.0f} s (TTIR made {TTIR['calls']} times, {TTIR['s']:.0f} s)"
    TTIR.update(calls=0, s=0.0)
    return note


def llama_layers():
    return LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=LAYERS,
                                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                        max_position_embeddings=8192, rope_theta=500000.0))


B.MODELS["llama3-8b-few"] = llama_layers
seen = []


def record_ops(graph):
    seen.append(sorted({str(n.target).split(".")[-1] if "hlwq" not in str(n.target) else str(n.target)
                        for n in graph.nodes if "hlwq" in str(n.target) or "triton_kernel" in str(n.target)}))


def time_steps(model, label):
    torch._dynamo.reset()
    seen.clear()
    cache = StaticCache(config=model.config, max_cache_len=STEPS + 16)
    fwd = torch.compile(model.forward)
    tok = torch.randint(0, 1000, (1, 1), device="cuda")
    logits = []

    def run(n, keep=False):
        cache.reset()
        for p in range(n):
            pos = torch.tensor([p], device="cuda")
            out = fwd(input_ids=tok, cache_position=pos, position_ids=pos[None], use_cache=True,
                      **{cache_argument(model): cache})
            if keep:
                logits.append(out.logits.float().clone())

    TTIR.update(calls=0, s=0.0)
    t0 = time.perf_counter()
    with inductor_config.patch(post_grad_custom_post_pass=record_ops), fresh_cache():
        run(4, keep=True)
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
          f"{compile_note(compile_s)}; ops in the graphs: {seen}", flush=True)
    return sorted(times)[1], logits


def default_mode():
    with torch.no_grad():
        bf16, _ = B.build("llama3-8b-few", "bf16")
        print("bf16 built", flush=True)
        res = {"bf16": [time_steps(bf16, "bf16")[0]]}
        del bf16
        q5, _ = B.build("llama3-8b-few", "hlwq-q5")
        print("q5 built", flush=True)
        for r in range(2):
            got = {}
            for label, on in (("q5 new", True), ("q5 old", False)):
                kernels.compiled.COMPILED_GEMV = on
                t, got[label] = time_steps(q5, f"{label} r{r}")
                res.setdefault(label, []).append(t)
            diffs = [(a - b).abs().max().item() for a, b in zip(got["q5 new"], got["q5 old"])]
            print(f"round {r}: max |logits new - old| per step {diffs}", flush=True)
    print(res)
    print(f"per HLWQ projection ({7 * LAYERS} a step): old - new = "
          f"{1e3 * (sum(res['q5 old']) - sum(res['q5 new'])) / 2 / (7 * LAYERS):.1f} us")


def user_ways():
    ids = torch.randint(1, 128256, (1, B.PROMPT), device="cuda")
    with torch.no_grad():
        for method in ("bf16", "hlwq-q5"):
            model, _ = B.build("llama3-8b-few", method)
            print(f"{method} built", flush=True)
            flags = (False,) if method == "bf16" else (False, True, False, True)
            tokens = {}
            for on in flags:
                kernels.compiled.COMPILED_GEMV = on
                torch._dynamo.reset()
                TTIR.update(calls=0, s=0.0)
                t0 = time.perf_counter()
                with fresh_cache():
                    gen = B.time_generate(model, ids)
                    tokens[on] = model.generate(ids, max_new_tokens=32, do_sample=False,
                                                cache_implementation="static")
                gen_note = compile_note(time.perf_counter() - t0)
                torch._dynamo.reset()
                t0 = time.perf_counter()
                with fresh_cache():
                    graph_tps, ttft, _, _ = B.time_graph(model, ids, compile=True)
                print(f"{method} flag {int(on)}: generate() {gen:.1f} tok/s [{gen_note}, timed calls included]; "
                      f"GraphDecoder {graph_tps:.1f} tok/s (TTFT {ttft:.1f} ms) "
                      f"[{compile_note(time.perf_counter() - t0)}, timed calls included]", flush=True)
            if len(tokens) == 2:
                print(f"first 32 tokens of generate(), flag on == off: {torch.equal(tokens[True], tokens[False])}",
                      flush=True)
            del model
            torch._dynamo.reset()
            torch.cuda.empty_cache()


if "a" in PART:
    store_variants()
if "b" in PART:
    default_mode()
if "c" in PART:
    user_ways()
