"""Session 36: the eager 128-token prefill (Llama-3-8B shape, Q5 and bf16) in ONE process, with each Launch's direct
path as this tree makes it ("new": the C launcher, kept TMA expansions) and as ca67033 made it ("old": Triton's
Python launcher, a TensorDescriptor per call), alternating, plans cleared before each mode. Host time of the
layer's wrappers and glue is the same code in both modes; only the launch differs."""
import os, statistics, sys, time
import torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../benchmarks"))
from bench_decode import PROMPT, build  # noqa: E402
from hlwq_ops.kernels import launch as L  # noqa: E402

new_direct = L.direct


class OldDirect:
    """ca67033's direct path: run_launcher (CudaLauncher.__call__ and its descriptor wrapper) with descriptors made
    per call."""

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, grid, stream, tensors, tail):
        args = tuple(t.descriptor() if type(t) is L.Tma else t for t in tensors)
        L.run_launcher(self.compiled, grid, args + tail)


def forward_ms(model, ids, n=5):
    walls = []
    for _ in range(n):
        start = time.perf_counter()
        model(ids, use_cache=False)
        torch.cuda.synchronize()
        walls.append(1e3 * (time.perf_counter() - start))
    return statistics.median(walls)


print(torch.cuda.get_device_name(), torch.__version__, time.strftime("%Y-%m-%d"), flush=True)
for method in sys.argv[1:]:
    model, _ = build("llama3-8b", method)
    ids = torch.randint(0, model.config.vocab_size, (1, PROMPT), device="cuda")
    rows = {"new": [], "old": []}
    with torch.no_grad():
        for _ in range(3):
            model(ids, use_cache=False)
        for rnd in range(5):
            for mode in ("new", "old") if rnd % 2 == 0 else ("old", "new"):
                L.direct = new_direct if mode == "new" else OldDirect
                L.clear_plans()
                for _ in range(2):
                    model(ids, use_cache=False)
                torch.cuda.synchronize()
                rows[mode].append(forward_ms(model, ids))
    L.direct = new_direct
    print(f"{method}: " + "; ".join(f"{m} " + " ".join(f"{v:.1f}" for v in r) + f" (median {statistics.median(r):.1f})"
                                    for m, r in rows.items()) + " ms", flush=True)
    del model
    torch.cuda.empty_cache()
