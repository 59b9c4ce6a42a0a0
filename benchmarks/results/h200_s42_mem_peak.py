"""Session 42: what is allocated at the peak of a steady GraphDecoder call (second generate: eager 128-token
prefill, then 256 decode steps replayed), Llama-3-8B shape, batch 1 -- bf16 and HLWQ Q5 in one process.
The allocator's trace is replayed to the peak; the blocks live there are grouped by the innermost frame of this
library or transformers (else the innermost frame)."""
import collections, gc, os, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../benchmarks"))
from bench_decode import NEW, PROMPT, build  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402


def where(ev):
    frames = ev.get("frames") or []
    for f in frames:
        if "hlwq_ops" in f["filename"] or "transformers" in f["filename"] or "bench_decode" in f["filename"]:
            return f"{f['filename'].split('site-packages/')[-1].split('/work/')[-1]}:{f['line']} {f['name']}"
    return (f"{frames[0]['filename'].split('/')[-1]}:{frames[0]['line']} {frames[0]['name']}" if frames else "?")


def live_at_peak(trace):
    cur, best, best_i = 0, 0, -1
    for i, ev in enumerate(trace):
        if ev["action"] == "alloc":
            cur += ev["size"]
        elif ev["action"] == "free_requested":
            cur -= ev["size"]
        if cur > best:
            best, best_i = cur, i
    live = {}
    for ev in trace[: best_i + 1]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
        elif ev["action"] == "free_requested":
            live.pop(ev["addr"], None)
    return best, best_i, len(trace), live


print(torch.cuda.get_device_name(), torch.__version__, time.strftime("%Y-%m-%d %H:%M"), flush=True)
for method in sys.argv[1:]:
    torch._dynamo.reset(); gc.collect(); torch.cuda.empty_cache()
    base0 = torch.cuda.memory_allocated()
    model, _ = build("llama3-8b", method)
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    decoder = GraphDecoder(model, compile=True)
    decoder.generate(ids, NEW)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=500000, stacks="python")
    decoder.generate(ids, NEW)
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak = torch.cuda.max_memory_allocated()
    trace = snap["device_traces"][torch.cuda.current_device()]
    rise, at, n, live = live_at_peak(trace)
    print(f"\n{method}: allocated before the call {(before - base0) / 2**30:.3f} GiB above base; steady peak "
          f"{(peak - base0) / 2**30:.3f} GiB; peak - before {(peak - before) / 2**20:.1f} MiB; trace rise to peak "
          f"{rise / 2**20:.1f} MiB at event {at} of {n}", flush=True)
    groups = collections.Counter()
    counts = collections.Counter()
    for ev in live.values():
        groups[where(ev)] += ev["size"]
        counts[where(ev)] += 1
    for key, size in groups.most_common(15):
        print(f"  {size / 2**20:9.2f} MiB  x{counts[key]:<4} {key}")
    del decoder, model, snap, trace, live
