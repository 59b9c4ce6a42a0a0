"""Session 66, call 4: quantize_ref on the GPU, the session-65 search against this session's.

The session-65 search (torch.bucketize for every factor, every factor's int64 codes carried along) is
``tests/test_nearest.py``'s ``_search_ref``; this session's keeps each block's best factor and recomputes its
codes once (bucketize on a GPU too). Each of one Llama-3-8B layer's four shapes (random bf16), Q5 and Q4: the median
of three quantizations with each search, alternating, the same bytes from both, and the layer's total (q, k, v, o,
gate, up, down).
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.getcwd())  # the checkout's tests package
from hlwq_ops import format as fmt  # noqa: E402
from tests.test_nearest import _search_ref  # noqa: E402

PER_LAYER = {(4096, 4096): 2, (1024, 4096): 2, (14336, 4096): 2, (4096, 14336): 1}
SEARCHES = {"session 66": fmt._codes_and_scale, "session 65": _search_ref}


def seconds(w, bits, search) -> tuple[float, tuple]:
    fmt._codes_and_scale = SEARCHES[search]
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fmt.quantize_ref(w, bits)
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


torch.manual_seed(0)
for bits in (5, 4):
    total = dict.fromkeys(SEARCHES, 0.0)
    for shape, count in PER_LAYER.items():
        w = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
        runs = {name: [] for name in SEARCHES}
        for _ in range(4):  # alternating; the first round a warm-up
            for name in SEARCHES:
                runs[name].append(seconds(w, bits, name))
        runs = {name: r[1:] for name, r in runs.items()}
        a, b = (runs[name][0][1] for name in SEARCHES)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), "the two searches disagree"
        med = {name: statistics.median(t for t, _ in runs[name]) for name in SEARCHES}
        for name in SEARCHES:
            total[name] += count * med[name]
        times = ", ".join(f"{n} {t * 1e3:.1f} ms" for n, t in med.items())
        print(f"Q{bits} {shape[0]}x{shape[1]}: {times}", flush=True)
    print(f"Q{bits} one layer: " + ", ".join(f"{n} {t:.3f} s" for n, t in total.items()) + "; same bytes: yes",
          flush=True)
