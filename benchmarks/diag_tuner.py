"""Does the tuner pick the fastest GEMV config, and the same one each time? For each shape and bits at M = 1:

1. the tuner run afresh ``--trials`` times on one weight (the key dropped from its table each time), with the GPU
   left idle ``--idle`` seconds before each candidate's first timing, as compiling it leaves the GPU in a first call
   (not before its later timings: the tuner's later passes follow no compile): its pick and the times it
   measured for every candidate;
2. every GEMV candidate, and VEC = 4 R = 8 at 4..10 programs per SM, timed like ``bench_ops.py`` (one CUDA graph
   over copies spanning the L2 four times), in ``--rounds`` interleaved rounds (the best of them), each output
   checked against the float64 product of the dequantized weight.

Run it with another tree's ``hlwq_ops`` on ``PYTHONPATH`` to see that tree's tuner, and ``HLWQ_CACHE_DIR`` set to an
empty directory, one for each tree (each trial saves its pick; a cached pick would time nothing)::

    python benchmarks/diag_tuner.py --shapes 14336x4096 4096x14336 --bits 5 4 --trials 6 --json diag_tuner.json
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from typing import Callable

import torch
from bench_ops import captured, interleaved_times, quantized_for_timing, rel_error

from hlwq_ops import kernels
from hlwq_ops.kernels import tuning


def label(config: dict) -> str:
    """A config's parameters as one string (every GEMV candidate has ``num_warps = 4``)."""
    return " ".join(f"{k}={v}" for k, v in config.items() if k not in ("num_warps", "kernel"))


def tuner_trials(key: str, trials: int, idle: float, tune: Callable[[], dict]) -> list[dict]:
    """``tune()`` run ``trials`` times with ``key`` dropped from the table first; per trial the pick and what the
    tuner measured for each candidate (us; every timing of a candidate, in order). The tuner's own timing function
    is wrapped for the trials (restored after): the only way to see what it measured."""
    original, out = tuning._time_over, []

    def timed(run, config, weights, *args, **kwargs):
        if label(config) not in seen:
            time.sleep(idle)
        ms = original(run, config, weights, *args, **kwargs)
        seen[label(config)].append(round(ms * 1e3, 2))
        return ms

    tuning._time_over = timed
    try:
        for _ in range(trials):
            tuning._TUNED.pop(key, None)
            seen = collections.defaultdict(list)
            picked = tune()
            if not seen:
                raise RuntimeError(f"{key}: the tuner timed nothing (a cached pick?): set HLWQ_CACHE_DIR to an empty "
                                   "directory, one for each tree")
            out.append(dict(picked=label(picked), seen=dict(seen)))
            print(f"  tuner picked {label(picked)}; measured {dict(seen)}", flush=True)
    finally:
        tuning._time_over = original
    return out


def configs_to_time(N: int, k_pad: int, bits: int, sm: int) -> list[dict]:
    """The tuner's GEMV candidates at M = 1, then VEC = 4 R = 8 at 4..10 programs per SM where not among them."""
    out = tuning.candidates("gemv", 1, N, k_pad, sm, bits)
    for per_sm in range(4, 11):
        config = tuning.gemv_tile((4, 8, per_sm), 1, N, k_pad, sm, bits)
        if config not in out:
            out.append(config)
    return out


def careful_times(run, configs: list[dict], copies: list, ref: torch.Tensor, rounds: int) -> dict[str, dict]:
    """Each config's graph over ``copies``, timed in ``rounds`` interleaved rounds: the best median (us) and the
    output's error."""
    graphs, out = [], {}
    for config in configs:
        y = run(config, *copies[0])
        out[label(config)] = dict(config=config, rel_err=rel_error(y, ref))
        graphs.append(captured([lambda c=config, q=q, s=s: run(c, q, s) for q, s in copies]))
    for record, us in zip(out.values(), interleaved_times(graphs, len(copies), rounds)):
        record["us"] = us
    for name, record in out.items():
        print(f"  {name:<40} best {min(record['us']):7.2f} us  rounds {record['us']}  err {record['rel_err']:.1e}",
              flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["14336x4096", "4096x14336"])
    p.add_argument("--bits", nargs="+", type=int, default=[5, 4])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--idle", type=float, default=1.0,
                   help="seconds the GPU idles before a candidate's first timing in a trial")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="diag_tuner.json")
    a = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, torch {torch.__version__}, hlwq_ops from {kernels.__file__}", flush=True)
    results = []
    for shape in a.shapes:
        N, K = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        w = torch.randn(N, K, device="cuda") * 0.02
        for bits in a.bits:
            copies, w_hat, _ = quantized_for_timing(w, bits, props.L2_cache_size)
            x = torch.randn(1, K, device="cuda").bfloat16()
            ref = x.double() @ w_hat.t()
            run = kernels._gemv_run(x, None, bits, 128, None, torch.bfloat16)
            key = tuning.key_for("gemv", 1, N, K, bits, w.device)
            tuning._load(w.device)  # the cache file read now, not inside the first trial
            print(f"{shape} q{bits} ({len(copies)} copies in the careful timing)", flush=True)
            trials = tuner_trials(key, a.trials, a.idle,
                                  lambda w=copies[0]: tuning.config_for("gemv", 1, N, K, bits, w, run))
            careful = careful_times(run, configs_to_time(N, K, bits, props.multi_processor_count), copies, ref,
                                    a.rounds)
            results.append(dict(shape=shape, bits=bits, trials=trials, careful=careful))
            with open(a.json, "w") as f:  # after each case: a timeout keeps what was measured
                json.dump(dict(device=props.name, results=results), f, indent=1)
            del copies, w_hat


if __name__ == "__main__":
    main()
