"""Session 66, call 4: quantize_ref on the GPU, the session-65 search against this session's.

The session-65 search (torch.bucketize for every factor, every factor's int64 codes carried along) is
``tests/test_nearest.py``'s ``_search_ref``; this session's keeps each block's best factor and recomputes its
codes once (bucketize on a GPU too). One Llama-3-8B layer's seven weights (random bf16), Q5 and Q4, three times
each, alternating; the two must give the same bytes. Prints the seconds per layer (the median of three).
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.getcwd())  # the checkout's tests package
from hlwq_ops import format as fmt  # noqa: E402
from tests.test_nearest import _search_ref  # noqa: E402

SHAPES = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]
_current = fmt._codes_and_scale


def layer(weights, bits, old: bool):
    fmt._codes_and_scale = _search_ref if old else _current
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = [fmt.quantize_ref(w, bits) for w in weights]
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


torch.manual_seed(0)
weights = [torch.randn(*s, device="cuda", dtype=torch.bfloat16) for s in SHAPES]
for bits in (5, 4):
    times = {True: [], False: []}
    layer(weights[:1], bits, True), layer(weights[:1], bits, False)  # warm-up
    for _ in range(3):
        for old in (False, True):
            torch.cuda.reset_peak_memory_stats()
            t, out = layer(weights, bits, old)
            times[old].append((t, torch.cuda.max_memory_allocated() / 2**30))
            if not old:
                first = out
            else:
                assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, out))
    new, old = (statistics.median(x[0] for x in times[k]) for k in (False, True))
    print(f"Q{bits}: one layer, this session {new:.3f} s, session 65 {old:.3f} s; same bytes: yes; peak "
          f"{times[False][-1][1]:.2f} / {times[True][-1][1]:.2f} GiB", flush=True)
