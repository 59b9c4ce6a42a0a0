"""Session 55, call 3 (benchmarks/NOTES.md, session 55): where the decode rounds' tokens part (NOTES 54 Next 2).

One process per tuning setting (``HLWQ_AUTOTUNE`` as set by the caller), on a fresh machine's empty tuning cache:
the Llama-3-8B-shaped Q5 model, ungrouped; decoder A called three times, then (compiled afresh) decoder B twice,
256 new tokens each; the eager prompt's logits twice; the split-K counters' buffers checked all zero at the end.
Prints where each call's tokens first differ from A's first call's, and writes them all to ``--json``."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_decode import NEW, PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402
from hlwq_ops.kernels import common  # noqa: E402


def first_difference(a, b):
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


p = argparse.ArgumentParser()
p.add_argument("--json", required=True)
args = p.parse_args()
model, _ = build("llama3-8b", "hlwq-q5")
ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
runs = {}
for name, calls in (("A", 3), ("B", 2)):
    torch._dynamo.reset()
    decoder = GraphDecoder(model, group_projections=False)
    for i in range(calls):
        runs[f"{name}{i}"] = decoder.generate(ids, NEW)[0, PROMPT:].cpu()
    del decoder
with torch.no_grad():
    logits = [model(ids, logits_to_keep=1).logits.float().cpu() for _ in range(2)]
counters = [buf for buf in [*common._COUNTERS.values(), *common._RETIRED]]
nonzero = [int((buf != 0).sum()) for buf in counters]
out = dict(autotune=os.environ.get("HLWQ_AUTOTUNE"), device=torch.cuda.get_device_name(),
           differs_from_A0_at={k: first_difference(v, runs["A0"]) for k, v in runs.items()},
           prompt_logits_equal=torch.equal(*logits), counters_nonzero=nonzero,
           tokens={k: v.tolist() for k, v in runs.items()})
print(json.dumps({k: v for k, v in out.items() if k != "tokens"}), flush=True)
Path(args.json).write_text(json.dumps(out))
