"""Decode benchmark: Llama-3-8B- and Qwen3.5-9B-shaped models (random weights), on one GPU.

For each model, method (bf16, torchao int4 tinygemm, HLWQ Q5, HLWQ Q4) and batch
size, with a 128-token prompt and 256 new tokens (greedy, static KV cache):

- ``generate``: ``model.generate()`` as users call it (median of three calls), with
  ``cache_implementation="static"`` (transformers compiles the decode step
  with CUDA graph trees). Each call makes a new cache; with transformers 5.17
  / torch 2.11 two calls recorded two graphs, and at every token of the
  second the first one's cache-address check failed before the second's
  replayed;
- ``generate-reuse``: the same with one ``StaticCache`` passed to every call
  (reset in between): one graph serves every call;
- ``graph``: :class:`hlwq_ops.decode.GraphDecoder`, the decode step compiled
  and captured in one CUDA graph, as a serving engine runs it, with the prompt
  run eagerly (``GraphDecoder``'s default);
- ``graph-prompt``: the same with the prompt's forward captured as well
  (``prompt_graph=True``): the timed call's time to first token is a replay.

Reports decode tokens/s (all sequences of the batch), time to first token
(eager prefill), peak GPU memory (over the warm-up call, which compiles and
tunes, and the timed one; and the timed call's alone, "steady"; both above
what earlier methods of the same process left allocated), model size, and
the time quantization took. Host-bound numbers (TTFT, the ``generate`` way)
also depend on what ran before in the process: run one method per process to
compare them.

    python benchmarks/bench_decode.py --models llama3-8b --ways graph --batches 1 8

torchao int4 is quantized with ``set_inductor_config=False``, so that every
method compiles under the same Inductor settings. With
``--int4-inductor torchao`` int4's config sets torchao's recommended ones
(coordinate-descent tuning among them) for the rest of the process, as
torchao does by default: they change the Inductor kernels around the int4
linears and those of every later method in the process, and under them the
Qwen3.5-shaped step at batch 8 did not compile in 560 s on an H100. Each row
notes whether coordinate-descent tuning was on.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch
from torchao.quantization import Int4WeightOnlyConfig, quantize_
from transformers import LlamaConfig, LlamaForCausalLM, StaticCache
from transformers.models.qwen3_5 import Qwen3_5ForCausalLM, Qwen3_5TextConfig

import hlwq_ops
from hlwq_ops.decode import GraphDecoder
from hlwq_ops.utils import model_nbytes

PROMPT, NEW = 128, 256


def llama3_8b() -> torch.nn.Module:
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    )
    return LlamaForCausalLM(config)


def qwen35_9b() -> torch.nn.Module:
    return Qwen3_5ForCausalLM(Qwen3_5TextConfig())  # the defaults are the 9B text model's shapes


MODELS = {"llama3-8b": llama3_8b, "qwen3.5-9b": qwen35_9b}
METHODS = ("bf16", "int4", "hlwq-q5", "hlwq-q4")


def build(name: str, method: str, int4_inductor: str = "unchanged") -> tuple[torch.nn.Module, float]:
    """The model with random N(0, 0.02) weights on the GPU, quantized; returns (model, quantize seconds).

    ``int4_inductor``: "unchanged" leaves Inductor's settings as they are; "torchao" lets torchao's int4 config set
    its recommended ones for the rest of the process.
    """
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # build the 8B weights in bf16 directly
    try:
        with torch.device("cuda"):
            model = MODELS[name]().eval()
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = None  # decode the full length
    model.generation_config.pad_token_id = 0
    torch.cuda.synchronize()
    start = time.perf_counter()
    no_lm_head = lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn  # noqa: E731
    if method == "int4":
        config = Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d",
                                      set_inductor_config=int4_inductor == "torchao")
        quantize_(model, config, no_lm_head)
    elif method.startswith("hlwq"):
        quantize_(model, hlwq_ops.hlwq(bits=int(method[-1])), no_lm_head)
    torch.cuda.synchronize()
    return model, time.perf_counter() - start


def time_generate(model, ids, reuse_cache: bool = False, repeats: int = 3) -> float:
    """Decode tokens/s of model.generate() with a static cache: the median of ``repeats`` calls after a warm-up
    call (prefill included); with ``reuse_cache`` every call gets one StaticCache, reset in between."""
    kwargs = dict(max_new_tokens=NEW, do_sample=False)
    if reuse_cache:
        cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + NEW)
        kwargs["past_key_values"] = cache
    else:
        kwargs["cache_implementation"] = "static"
    rates = []
    with torch.no_grad():
        for call in range(repeats + 1):
            if reuse_cache:
                cache.reset()
            torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(ids, **kwargs)
            torch.cuda.synchronize()
            if call:  # the first call compiles
                rates.append(ids.shape[0] * NEW / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def time_graph(model, ids, compile: bool, prompt_graph: bool = False) -> tuple[float, float, int, int]:
    """With GraphDecoder, after a warm-up call: (decode tokens/s, time to first token in ms, peak bytes of the
    warm-up call, peak bytes of the timed call).

    The warm-up call compiles, captures and tunes the kernels; the timed call's peak (prefill and decode) is
    what the model needs from then on.
    """
    decoder = GraphDecoder(model, compile=compile, prompt_graph=prompt_graph)
    decoder.generate(ids, NEW)
    first = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    decoder.generate(ids, NEW)
    tps, ttft = ids.shape[0] * decoder.stats.decode_tokens_per_s, 1e3 * decoder.stats.prefill_s
    return tps, ttft, first, torch.cuda.max_memory_allocated()


def run(name: str, method: str, batches: list[int], ways: list[str], int4_inductor: str = "unchanged") -> list[dict]:
    # What earlier methods of this process still hold (compiled graphs' pools, caches) is not this one's:
    # peaks are counted above what is allocated once their compiled code is dropped and garbage collected.
    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    model, quant_s = build(name, method, int4_inductor)
    size = model_nbytes(model)
    rows = []
    for batch in batches:
        ids = torch.randint(1, model.config.vocab_size, (batch, PROMPT), device="cuda")  # no pad id (0): no padding
        for way in ways:
            torch._dynamo.reset()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            graph = way in ("graph", "graph-prompt")
            note = "compiled step captured" if graph else ""
            steady = None
            try:
                if graph:
                    tps, ttft, first, steady = time_graph(model, ids, compile=True, prompt_graph=way == "graph-prompt")
                else:
                    tps, ttft = time_generate(model, ids, reuse_cache=way == "generate-reuse"), None
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # keep the run going; say what failed
                if not graph:
                    raise
                note = f"compiled capture failed ({type(e).__name__}); eager step captured, prompt eager"
                print(note, str(e)[:300], flush=True)
                torch._dynamo.reset()
                torch.cuda.reset_peak_memory_stats()
                tps, ttft, first, steady = time_graph(model, ids, compile=False)
            peak = torch.cuda.max_memory_allocated() if steady is None else max(first, steady)
            if torch._inductor.config.coordinate_descent_tuning:  # (torchao's settings, from an int4 quantize)
                note = "; ".join(filter(None, [note, "Inductor's coordinate-descent tuning on"]))
            row = dict(model=name, method=method, batch=batch, way=way, note=note, tok_s=tps, ttft_ms=ttft,
                       peak_gib=(peak - base) / 2**30,
                       steady_peak_gib=None if steady is None else (steady - base) / 2**30,
                       earlier_gib=base / 2**30,
                       size_gib=size / 2**30,
                       quantize_s=quant_s, wall_s=time.perf_counter() - start)
            print(json.dumps(row), flush=True)
            rows.append(row)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--ways", nargs="+", default=["graph", "generate"],
                   choices=["graph", "graph-prompt", "generate", "generate-reuse"])
    p.add_argument("--json", default="bench_decode.json")
    p.add_argument("--dequant-chunk-mb", type=int, help="hlwq_ops.kernels.dequant.CHUNK_BYTES, in MiB")
    p.add_argument("--int4-inductor", default="unchanged", choices=["unchanged", "torchao"],
                   help="unchanged: int4 quantized with set_inductor_config=False, every method under the same "
                        "Inductor settings; torchao: int4's config sets torchao's recommended Inductor settings for "
                        "the rest of the process, as torchao does by default")
    a = p.parse_args()
    if a.dequant_chunk_mb is not None:
        if a.dequant_chunk_mb <= 0:
            p.error(f"--dequant-chunk-mb must be positive, got {a.dequant_chunk_mb}")
        hlwq_ops.kernels.dequant.CHUNK_BYTES = a.dequant_chunk_mb << 20
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    rows = []
    for name in a.models:
        for method in a.methods:
            rows += run(name, method, a.batches, a.ways, a.int4_inductor)
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
    print(f"{'model':<11} {'method':<8} {'B':>2} {'way':<14} {'tok/s':>8} {'TTFT ms':>8} {'peak GiB':>8} {'steady':>7} "
          f"{'size GiB':>8} {'quant s':>7}")
    for r in rows:
        ttft = f"{r['ttft_ms']:.1f}" if r["ttft_ms"] is not None else "-"
        steady = f"{r['steady_peak_gib']:.2f}" if r["steady_peak_gib"] is not None else "-"
        print(f"{r['model']:<11} {r['method']:<8} {r['batch']:>2} {r['way']:<14} {r['tok_s']:>8.1f} {ttft:>8} "
              f"{r['peak_gib']:>8.2f} {steady:>7} {r['size_gib']:>8.2f} {r['quantize_s']:>7.1f}")


if __name__ == "__main__":
    main()
