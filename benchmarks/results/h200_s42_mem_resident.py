"""Session 42: what stays allocated (besides the model's own tensors) after a GraphDecoder's warm-up and a steady
call, and what is live at the warm-up call's peak, Llama-3-8B shape, batch 1 -- bf16 and HLWQ Q5 in one process.
Allocation history is recorded from before the model is built; blocks are grouped by their innermost frame in this
library, transformers or the benchmark (else the innermost frame)."""
import collections, gc, os, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../benchmarks"))
from bench_decode import NEW, PROMPT, build  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402
from hlwq_ops.utils import model_nbytes  # noqa: E402


def where(frames):
    for f in frames or []:
        if "hlwq_ops" in f["filename"] or "transformers" in f["filename"] or "bench_decode" in f["filename"] or (
                "torchao" in f["filename"]):
            return f"{f['filename'].split('site-packages/')[-1].split('/work/')[-1]}:{f['line']} {f['name']}"
    return f"{frames[0]['filename'].split('/')[-1]}:{frames[0]['line']} {frames[0]['name']}" if frames else "?"


def show(title, blocks, top=14):
    groups, counts = collections.Counter(), collections.Counter()
    for size, frames in blocks:
        groups[where(frames)] += size
        counts[where(frames)] += 1
    print(f"  {title}: {sum(groups.values()) / 2**20:.1f} MiB in {sum(counts.values())} blocks", flush=True)
    for key, size in groups.most_common(top):
        print(f"    {size / 2**20:9.2f} MiB  x{counts[key]:<5} {key}", flush=True)


print(torch.cuda.get_device_name(), torch.__version__, time.strftime("%Y-%m-%d %H:%M"), flush=True)
for method in sys.argv[1:]:
    torch._dynamo.reset(); gc.collect(); torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
    model, _ = build("llama3-8b", method)
    size = model_nbytes(model)
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    decoder = GraphDecoder(model, compile=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before_warm = torch.cuda.memory_allocated()
    w0 = len(torch.cuda.memory._snapshot()["device_traces"][torch.cuda.current_device()])  # the warm-up's first event
    decoder.generate(ids, NEW)
    torch.cuda.synchronize()
    warm_peak = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    graph, cache, saves = decoder._graph, decoder._cache, []
    save = decoder._save_cache
    decoder._save_cache = lambda: (saves.append(1), save())[1]
    decoder.generate(ids, NEW)
    torch.cuda.synchronize()
    print(f"{method} second call: same graph {decoder._graph is graph}, same cache {decoder._cache is cache}, "
          f"cache saves {len(saves)}", flush=True)
    steady_peak = torch.cuda.max_memory_allocated()
    end = torch.cuda.memory_allocated()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    gib = lambda b: (b - base) / 2**30  # noqa: E731
    print(f"\n{method}: model {size / 2**30:.3f} GiB; allocated after build {gib(before_warm):.3f}, warm-up peak "
          f"{gib(warm_peak):.3f}, steady peak {gib(steady_peak):.3f}, after both calls {gib(end):.3f} GiB", flush=True)
    params = set()
    for t in list(model.parameters()) + list(model.buffers()):
        inner = [getattr(t, n) for n in t.__tensor_flatten__()[0]] if hasattr(t, "__tensor_flatten__") else [t]
        params.update(i.untyped_storage().data_ptr() for i in inner)
    live = [(b["size"], b.get("frames")) for seg in snap["segments"] for b in seg["blocks"]
            if b["state"] == "active_allocated" and b["address"] not in params]
    show("allocated at the end, not the model's parameters or buffers", live)
    # the warm-up call's peak: the trace replayed, the maximum taken from the warm-up's first event
    trace = snap["device_traces"][torch.cuda.current_device()]
    cur, best, best_i = 0, 0, -1
    for i, ev in enumerate(trace):
        if ev["action"] == "snapshot":
            continue
        if ev["action"] == "alloc":
            cur += ev["size"]
        elif ev["action"] == "free_requested":
            cur -= ev["size"]
        if cur > best and i >= w0:
            best, best_i = cur, i
    alive = {}
    for ev in trace[: best_i + 1]:
        if ev["action"] == "alloc":
            alive[ev["addr"]] = ev
        elif ev["action"] == "free_requested":
            alive.pop(ev["addr"], None)
    print(f"  trace: {len(trace)} events, the warm-up's from {w0}; its peak {best / 2**30:.3f} GiB above the "
          f"recording's start, at event {best_i}")
    show("live at the warm-up's peak, not the model's", [(e["size"], e.get("frames")) for a, e in alive.items()
                                                        if a not in params])
    del decoder, model, snap, trace, alive, live
