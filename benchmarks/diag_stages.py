"""The GEMV with plane 0 copied through Triton's software pipeline (``STAGES``) against the tuner's configs.

With ``STAGES = 1`` (the default) the kernel loads the next rows' words into
registers one iteration ahead, but ptxas sinks those loads to the end of the
loop body, right before their use (offline SASS, ``offline_sass.py``): each
iteration waits for its words. With ``STAGES = s > 1`` the plane-0 words go
through ``tl.range(num_stages=s)``: ``cp.async`` copies into shared memory
``s - 1`` iterations ahead, read back with ``LDS.128`` (plane 1 and the
scales are still gathered one iteration ahead). Offline, Q5 VEC = 4 R = 8: 64
registers instead of 72, two CTA barriers per iteration, 5.33 instructions
per weight instead of 4.98.

Times every tuner candidate at M = 1 (rotation in the kernel, as
``hlwq.linear`` runs it) with STAGES 1 and 3, and the best STAGES = 3 config with 2 and 4, each checked against the float64
reference, timed like ``bench_ops.py`` (one CUDA graph over weight copies
spanning the L2 several times), with bf16 ``F.linear`` of the same run:

    python benchmarks/diag_stages.py --shapes 14336x4096 4096x14336 4096x4096 1024x4096 --bits 5 4 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bench_ops import graph_time, n_copies, rel_error
from diag_warp_parts import SHAPES, time_config

from hlwq_ops.format import quantize_ref
from hlwq_ops.hadamard import fwht_ref
from hlwq_ops.kernels import tuning
from hlwq_ops.kernels.gemv import can_rotate, gemv, gemv_ref


def run(case: dict, x, qdata, scale, copies, ref, config: dict, best: dict) -> dict:
    """Check and time one config; ``best[stages]`` keeps the fastest correct ``(us, config)``."""
    bits, nbytes, stages = case["bits"], case["nbytes"], config.get("STAGES", 1)
    err = rel_error(gemv(x, qdata, scale, None, bits, 128, None, torch.float32, config, rotate=True), ref)
    us = time_config(x, copies, bits, config)
    print(f"{case['shape']:>10} q{bits} stages={stages} {us:7.2f} us {nbytes / us / 1e3:6.0f} GB/s "
          f"err {err:.1e}  {config}", flush=True)
    if err < 1e-4 and (stages not in best or us < best[stages][0]):
        best[stages] = (us, config)
    return dict(case, stages=stages, config=config, us=us, gb_s=nbytes / us / 1e3, rel_error=err)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=SHAPES)
    p.add_argument("--bits", nargs="+", type=int, default=[5, 4])
    p.add_argument("--stages", nargs="+", type=int, default=[1, 3], help="for every tuner candidate")
    p.add_argument("--more-stages", nargs="*", type=int, default=[2, 4], help="for the best of the largest --stages")
    p.add_argument("--json", default="diag_stages.json")
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
            case = dict(shape=shape, bits=bits, bf16_us=bf16_us, nbytes=nbytes)
            best = {}
            for base in tuning.candidates("gemv", 1, N, k_pad, props.multi_processor_count, bits):
                if can_rotate(bits, 128, base):
                    for stages in a.stages:
                        config = dict(base, STAGES=stages) if stages > 1 else base
                        rows.append(run(case, x, qdata, scale, copies, ref, config, best))
            if a.more_stages and max(a.stages) in best:  # other depths for the best pipelined config
                for stages in a.more_stages:
                    config = dict(best[max(a.stages)][1], STAGES=stages)
                    rows.append(run(case, x, qdata, scale, copies, ref, config, best))
            for stages, (us, config) in sorted(best.items()):
                print(f"{shape:>10} q{bits} best stages={stages}: {us:.2f} us, bf16 {bf16_us:.2f} us "
                      f"({bf16_us / us:.2f}x)  {config}", flush=True)
            del copies
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
