"""Diagnostic: the batch-1 decode step with sibling projections stacked into one HLWQ GEMV (q, k, v; gate, up).

A prototype of ``benchmarks/NOTES.md`` session 54's Next 1 (c), not a library feature: each sibling module is replaced
by a :class:`_Sibling` that shares a :class:`_Stack` -- the siblings' codes and scales concatenated by rows (HLWQ
quantizes every row on its own, so the stack holds exactly their weights) -- and the first sibling called with an
input computes the whole stack's linear, the others take their columns of it. ``GraphDecoder`` compiles the step
with ``fullgraph=True``, so a run that finishes shows Dynamo traced the shared state without a graph break. One
process, one model: the plain and the stacked step alternate, ``--rounds`` times each, every round compiled and
captured afresh; while stacked, the model holds both copies of the siblings' weights (the originals are put back
after the round). From ``benchmarks/``::

    python diag_stacked.py --rounds 2 --json diag_stacked.json

``--check`` instead runs a 2-layer model on the CPU: the same greedy tokens plain and stacked, eager and compiled
(no CUDA graph).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import NEW, PROMPT, build  # noqa: E402

from hlwq_ops import HLWQTensor  # noqa: E402
from hlwq_ops.decode import GraphDecoder  # noqa: E402

SIBLINGS = {"self_attn": ("q_proj", "k_proj", "v_proj"), "mlp": ("gate_proj", "up_proj")}


class _Stack:
    """The stacked weight and each sibling's columns of its output; the input being served, its output, and the
    siblings that have taken their columns of it."""

    def __init__(self, weights: list[HLWQTensor]):
        first = weights[0]
        for field in ("bits", "block_size", "dtype", "transposed"):
            values = [getattr(w, field) for w in weights]
            if len(set(values)) > 1:
                raise ValueError(f"siblings to stack must share {field}; found {values}")
        if any(w.codebook is not None for w in weights):
            raise ValueError("siblings with their own codebooks are not stacked here (one codebook per weight)")
        rows = [w.shape[0] for w in weights]
        qdata = torch.cat([w.qdata for w in weights])
        scale = torch.cat([w.scale for w in weights])
        self.weight = HLWQTensor(qdata, scale, first.bits, first.block_size, (sum(rows), first.shape[1]), first.dtype)
        starts = [sum(rows[:i]) for i in range(len(rows) + 1)]
        self.columns = list(zip(starts[:-1], starts[1:]))
        self._clear()

    def _clear(self) -> None:
        self.x = self.y = None
        self.served: set[int] = set()

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Sibling ``index``'s columns of the stack's linear of ``x``: computed when ``x`` is not the input being
        served, or when this sibling already took its columns of it; the state is dropped once every sibling has.
        An input changed in place between siblings is not seen (``x._version`` would see it, but Dynamo cannot
        trace a branch on it: a graph break, which ``fullgraph=True`` refuses)."""
        if self.x is not x or index in self.served:
            self.x, self.y, self.served = x, F.linear(x, self.weight), set()
        y = self.y
        self.served.add(index)
        if len(self.served) == len(self.columns):  # hold nothing past the layer
            self._clear()
        lo, hi = self.columns[index]
        return y[..., lo:hi]


class _Sibling(torch.nn.Module):
    """One projection of a :class:`_Stack`: its columns of the stack's output."""

    def __init__(self, stack: _Stack, index: int):
        super().__init__()
        self.stack, self.index = stack, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.output(x, self.index)


def stack(model: torch.nn.Module) -> dict[tuple[torch.nn.Module, str], torch.nn.Module]:
    """Replace every layer's sibling projections by :class:`_Sibling` modules; returns the originals by (parent,
    name), for :func:`unstack`."""
    originals = {}
    for layer in model.model.layers:
        for part, names in SIBLINGS.items():
            parent = getattr(layer, part)
            modules = [getattr(parent, n) for n in names]
            if any(m.bias is not None for m in modules):
                raise ValueError(f"{part}: siblings with a bias are not stacked here")
            shared = _Stack([m.weight for m in modules])
            for i, (n, m) in enumerate(zip(names, modules)):
                originals[(parent, n)] = m
                setattr(parent, n, _Sibling(shared, i))
    return originals


def unstack(originals: dict[tuple[torch.nn.Module, str], torch.nn.Module]) -> None:
    """Put back the modules :func:`stack` replaced."""
    for (parent, name), module in originals.items():
        setattr(parent, name, module)


def _tiny_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def check() -> None:
    """CPU: greedy tokens plain and stacked, eager and compiled, all equal."""
    from torchao.quantization import quantize_

    import hlwq_ops

    model = _tiny_llama()
    quantize_(model, hlwq_ops.hlwq_q5(), lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)
    ids = torch.randint(1, 512, (1, 16))
    outs = {}
    for compiled in (False, True):
        for stacked in (False, True):
            originals = stack(model) if stacked else None
            torch._dynamo.reset()
            outs[compiled, stacked] = GraphDecoder(model, compile=compiled, cuda_graph=False).generate(ids, 8)
            if originals:
                unstack(originals)
    for key, out in outs.items():
        print(key, out[0, -8:].tolist())
    assert all(torch.equal(out, outs[False, False]) for out in outs.values()), "tokens differ"
    print("check: the same tokens, eager and compiled, plain and stacked")


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The first new token (from 0) at which two runs differ; None where they agree."""
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default="diag_stacked.json")
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.check:
        check()
        return
    model, _ = build("llama3-8b", f"hlwq-q{args.bits}")
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    rows, first_tokens = [], {}
    for round_ in range(args.rounds):
        for stacked in (False, True):
            originals = stack(model) if stacked else None
            torch._dynamo.reset()
            start = time.perf_counter()
            decoder = GraphDecoder(model)
            decoder.generate(ids, NEW)  # warm-up: compiles, tunes, captures
            out = decoder.generate(ids, NEW)[0, PROMPT:]
            first = first_tokens.setdefault(stacked, out)  # each kind's first round: what later rounds must repeat
            row = dict(round=round_, stacked=stacked, tok_s=decoder.stats.decode_tokens_per_s,
                       ttft_ms=1e3 * decoder.stats.prefill_s,
                       differs_from_first_round_at=_first_difference(out, first),
                       differs_from_plain_at=_first_difference(out, first_tokens[False]),
                       wall_s=time.perf_counter() - start)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if originals:
                unstack(originals)
            del decoder
    Path(args.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), new=NEW, rows=rows), indent=1))


if __name__ == "__main__":
    main()
