"""Session 66, call 1: quantize_ref's grid search (hlwq_ops.nearest) against the torch.bucketize search on the GPU.

One Llama-3-8B layer's seven weights (random bf16), Q5 and Q4, each search three times, alternating; the two must
give the same bytes. Prints the seconds per layer (the median of three) for each search.

Run on 6221405, where the grid served every device. From 6edac4b on the search takes the grid on a CPU only, so on a
GPU this script times bucketize against itself.
"""

import statistics
import time

import torch

from hlwq_ops import format as fmt
from hlwq_ops import nearest

SHAPES = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]
_grid = nearest.CentroidGrid.for_codebook.__func__


def layer(weights, bits, grid: bool):
    nearest.CentroidGrid.for_codebook = classmethod(_grid if grid else (lambda cls, c: None))
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
        for grid in (True, False):
            t, out = layer(weights, bits, grid)
            times[grid].append(t)
            if grid:
                first = out
            else:
                same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, out))
                assert same, "the two searches disagree"
    g, b = statistics.median(times[True]), statistics.median(times[False])
    print(f"Q{bits}: one layer, grid {g:.3f} s, bucketize {b:.3f} s (x32 layers: {32 * g:.1f} / {32 * b:.1f} s); "
          f"same bytes: yes; peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
