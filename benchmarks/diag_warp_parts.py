"""The GEMV with each warp's partial row sums kept apart (``WARP_PARTS``) against the tuner's other candidates.

With VEC = 16 the four warps of a program sit side by side along K. The
earlier configs sum a row across them every iteration (shared memory, three
CTA barriers per iteration in the SASS); with ``WARP_PARTS = 4`` each warp
stores its own partial sums and the program adds them once, after its last
row (one barrier; split-K counters only when K needs more than one 4096-position
slice at Q4/Q5). Compiled offline (``offline_sass.py``, Triton 3.6, sm_90,
Q5, R = 4): 632 loop instructions and no barrier, against 666-680 and three
(``benchmarks/NOTES.md``, session 8). The tuner offers it since this script showed it faster on the
K = 4096 shapes (``benchmarks/RESULTS.md`` section 9b).

Times the tuner's candidates without partials and the WARP_PARTS configs at M = 1 (rotation in
the kernel, as ``hlwq.linear`` runs it), each checked against the float64
reference, timed like ``bench_ops.py`` (one CUDA graph over weight copies
spanning the L2 several times), with bf16 ``F.linear`` of the same run:

    python benchmarks/diag_warp_parts.py --shapes 14336x4096 4096x14336 4096x4096 --bits 5 4 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bench_ops import graph_time, n_copies, rel_error
from hlwq_ops.format import quantize_ref
from hlwq_ops.hadamard import fwht_ref
from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.gemv import can_rotate, gemv, gemv_ref, slice_codes

SHAPES = ["4096x4096", "1024x4096", "14336x4096", "4096x14336", "12288x4096", "4096x12288"]


def warp_part_configs(N: int, k_pad: int, bits: int, sm_count: int) -> list[dict]:
    """VEC = 16 with a partial per warp, for several rows per iteration and programs per SM."""
    slices = -(-k_pad // slice_codes(bits, 16))
    out = []
    for R in (2, 4, 8):
        for per_sm in (2, 3, 4, 5):
            rows = tuning._rows_per_program(N, slices, 1, R, sm_count, per_sm)
            config = dict(VEC=16, R=R, ROWS=rows, num_warps=4, WARP_PARTS=4)
            if config not in out:
                out.append(config)
    return out


def time_config(x, copies, bits, config) -> float:
    calls = [lambda q=q, s=s: gemv(x, q, s, None, bits, 128, None, torch.bfloat16, config, rotate=True)
             for q, s in copies]
    return graph_time(calls, replays=10)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=SHAPES)
    p.add_argument("--bits", nargs="+", type=int, default=[5, 4])
    p.add_argument("--json", default="diag_warp_parts.json")
    a = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    l2 = props.L2_cache_size
    print(f"{props.name}, torch {torch.__version__}", flush=True)
    rows = []
    for shape in a.shapes:
        N, K = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        w = torch.randn(N, K, device="cuda") * 0.02
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        wb = w.bfloat16()
        bf16_copies = [wb] + [wb.clone() for _ in range(n_copies(wb.numel() * 2, l2) - 1)]
        bf16_us = graph_time([lambda c=c: F.linear(x, c) for c in bf16_copies], replays=10)[0]
        del bf16_copies
        for bits in a.bits:
            qdata, scale = quantize_ref(w, bits, 128)
            k_pad = scale.shape[1] * 128
            nbytes = qdata.numel() + 2 * scale.numel()
            copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, l2) - 1)]
            ref = gemv_ref(fwht_ref(F.pad(x.float(), (0, k_pad - K)), 128), qdata, scale, None, bits, 128)
            found = {}
            earlier = [c for c in tuning.candidates("gemv", 1, N, k_pad, props.multi_processor_count, bits)
                       if c.get("WARP_PARTS", 1) == 1]  # the tuner's own, without the partials it now offers too
            for kind, configs in (("tuner", earlier),
                                  ("warp_parts", warp_part_configs(N, k_pad, bits, props.multi_processor_count))):
                for config in configs:
                    if not can_rotate(bits, 128, config):
                        continue
                    err = rel_error(gemv(x, qdata, scale, None, bits, 128, None, torch.float32, config, rotate=True),
                                    ref)
                    us = time_config(x, copies, bits, config)
                    row = dict(shape=shape, bits=bits, kind=kind, config=config, us=us, gb_s=nbytes / us / 1e3,
                               rel_error=err, bf16_us=bf16_us)
                    rows.append(row)
                    print(f"{shape:>10} q{bits} {kind:10s} {us:7.2f} us {nbytes / us / 1e3:6.0f} GB/s err {err:.1e}"
                          f"  {config}", flush=True)
                    if err < 1e-4 and (kind not in found or us < found[kind][0]):
                        found[kind] = (us, config)
            if len(found) == 2:
                (t, _), (wp, config) = found["tuner"], found["warp_parts"]
                print(f"{shape:>10} q{bits} best tuner {t:.2f} us, best warp_parts {wp:.2f} us ({t / wp:.3f}x), "
                      f"bf16 {bf16_us:.2f} us: {bf16_us / t:.2f}x -> {bf16_us / wp:.2f}x  {config}", flush=True)
            else:  # a config whose output is wrong is never "best"
                print(f"{shape:>10} q{bits} no correct config of kind {sorted({'tuner', 'warp_parts'} - set(found))}",
                      flush=True)
            del copies
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
