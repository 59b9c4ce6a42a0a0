"""Where two greedy decodes of one prompt part: every module's tensors, step by step, compared bit for bit.

NOTES 55 Next 1: one ``GraphDecoder``'s calls on a Llama-3-8B-shaped Q5 model give different tokens at a
384-position cache (128 + 256). This runs a decoder's ``generate`` twice (or more) with forward hooks that keep
every module's output (and a leaf module's input), and SDPA's query, mask and output, after each forward: the
prompt's and every decode step's (replayed from the CUDA graph: the hooks' copies are captured with the step). It
then names, for each later call, the first step and the first tensor, in the order they are computed, whose bytes
differ from the first call's, and each cache layer's first differing position at the end. (SDPA's keys and values,
the whole cache, are not kept per step: the cache is written once per position and zeroed between calls, so its
state at the end tells up to which position the keys and values of every step were equal.)

    python benchmarks/diag_repeat.py --method hlwq-q5 --arms eager,graph,graph-math --out repeat.json

Arms: ``eager`` (the step run eagerly, no graph), ``graph`` (the eager step replayed from a CUDA graph, as
``GraphDecoder(compile=False)``), ``graph-math`` (the same with SDPA's math backend only), ``graph-nocudnn`` (SDPA's
backends but cuDNN's). No compilation: hooks run as written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import PROMPT, build  # noqa: E402

from hlwq_ops.decode import GraphDecoder  # noqa: E402

_SDPA = torch.nn.functional.scaled_dot_product_attention


class Recorder:
    """One forward's tensors, by name, in the order they were computed; packed after each forward or replay."""

    def __init__(self, model: torch.nn.Module):
        self.values: dict[str, torch.Tensor] = {}
        self.packs: list[tuple[str, torch.Tensor, list[tuple[str, int, int]]]] = []
        self.sdpa_calls = 0
        self.sdpa_backends: dict[int, int] = {}  # query length -> the backend SDPA picks (torch's enum)
        self._handles = [model.register_forward_pre_hook(self._top_pre_hook)]
        self._handles.append(model.register_forward_hook(self._top_hook))
        for name, module in model.named_modules():
            if name:
                leaf = not any(True for _ in module.children())
                self._handles.append(module.register_forward_hook(self._hook(name, leaf), with_kwargs=True))
        self.pack_prefill_only = False
        torch.nn.functional.scaled_dot_product_attention = self._sdpa

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        torch.nn.functional.scaled_dot_product_attention = _SDPA

    def _keep(self, name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            self.values[name] = value.detach().clone()
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                self._keep(f"{name}.{i}", item)

    def _hook(self, name: str, leaf: bool):
        def hook(module, args, kwargs, output):
            if leaf:
                inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                if inputs:
                    self._keep(name + ".in", inputs[0])
            self._keep(name + ".out", output)

        return hook

    def _sdpa(self, query, key, value, attn_mask=None, **kwargs):
        i = self.sdpa_calls
        self.sdpa_calls += 1
        if query.shape[-2] not in self.sdpa_backends:
            self.sdpa_backends[query.shape[-2]] = int(torch._fused_sdp_choice(query, key, value, attn_mask, **kwargs))
        out = _SDPA(query, key, value, attn_mask=attn_mask, **kwargs)
        self._keep(f"sdpa{i}.query", query)
        if attn_mask is not None:
            self._keep(f"sdpa{i}.mask", attn_mask)
        self._keep(f"sdpa{i}.out", out)
        return out

    def _top_pre_hook(self, module, args):
        self.sdpa_calls = 0
        self.values = {}  # one forward's tensors (a graph's replays read the dict its capture filled)

    def _top_hook(self, module, args, output):
        capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        ids = self.values.get("model.embed_tokens.in")
        prefill = ids is not None and ids.shape[-1] > 1
        if not capturing and (prefill or not self.pack_prefill_only):
            self.pack("prefill" if prefill else "step", dict(self.values))

    def pack(self, label: str, values: dict[str, torch.Tensor]) -> None:
        """Append one byte vector of ``values`` (bitwise), with each name's byte range."""
        parts, index, at = [], [], 0
        for name, value in values.items():
            data = value.contiguous().reshape(-1).view(torch.uint8)
            parts.append(data)
            index.append((name, at, at + data.numel()))
            at += data.numel()
        self.packs.append((label, torch.cat(parts), index))


class _Replayer:
    """A captured graph whose every replay also packs the tensors its hooks' copies hold."""

    def __init__(self, graph: torch.cuda.CUDAGraph, recorder: Recorder):
        self.graph, self.recorder, self.captured = graph, recorder, dict(recorder.values)

    def replay(self) -> None:
        self.graph.replay()
        self.recorder.pack("step", self.captured)


def run_arm(model, ids, arm: str, calls: int, new: int) -> dict:
    """``calls`` generate() calls of one decoder, recorded; returns where each later call parts from the first."""
    graph = arm.startswith("graph")
    decoder = GraphDecoder(model, compile=False, cuda_graph=graph)
    recorder = Recorder(model)
    recorder.pack_prefill_only = graph
    if graph:
        capture = decoder._capture

        def capture_and_wrap():
            g, out = capture()
            return _Replayer(g, recorder), out

        decoder._capture = capture_and_wrap
    backend = contextlib.nullcontext()
    if arm.endswith("-math"):
        backend = sdpa_kernel([SDPBackend.MATH])
    elif arm.endswith("-nocudnn"):
        backend = sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    runs = []
    try:
        with backend:
            for _ in range(calls):
                recorder.packs = []
                start = time.perf_counter()
                tokens = decoder.generate(ids, new)[0, ids.shape[1]:]
                if ids.is_cuda:
                    torch.cuda.synchronize()
                caches = [(layer.keys.clone(), layer.values.clone()) for layer in decoder._cache.layers]
                runs.append({"tokens": tokens, "packs": recorder.packs, "caches": caches,
                             "seconds": time.perf_counter() - start})
    finally:
        recorder.remove()
    report = {"arm": arm, "sdpa_backends": recorder.sdpa_backends, "seconds": [r["seconds"] for r in runs],
              "packs": len(runs[0]["packs"]), "later_calls": []}
    for run in runs[1:]:
        report["later_calls"].append(compare(runs[0], run))
    report["tokens"] = [r["tokens"].tolist() for r in runs]
    return report


def _first(a: torch.Tensor, b: torch.Tensor) -> int | None:
    differ = (a != b).nonzero()
    return differ[0].item() if len(differ) else None


def compare(first: dict, later: dict) -> dict:
    """The first token, pack (prompt = 0, step i = i) and tensors that differ; each cache layer's first position."""
    out = {"token": _first(first["tokens"], later["tokens"]), "pack": None}
    for i, ((label, a, index), (_, b, _)) in enumerate(zip(first["packs"], later["packs"])):
        if a.shape != b.shape:
            out.update(pack=i, label=label, error=f"sizes {a.numel()} and {b.numel()}")
            break
        if torch.equal(a, b):
            continue
        names = [(name, int((a[s:e] != b[s:e]).sum())) for name, s, e in index if not torch.equal(a[s:e], b[s:e])]
        out.update(pack=i, label=label, differing=len(names), first_tensors=names[:16])
        break
    positions = []
    for (ka, va), (kb, vb) in zip(first["caches"], later["caches"]):
        differ = ((ka != kb) | (va != vb)).any(dim=-1).any(dim=1).any(dim=0).nonzero()
        positions.append(differ[0].item() if len(differ) else None)
    out["cache_first_position_by_layer"] = positions
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--method", default="hlwq-q5", help="bf16, int4, hlwq-q5, hlwq-q4")
    parser.add_argument("--arms", default="eager,graph,graph-math")
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--new", type=int, default=256, help="new tokens (the cache holds the prompt's 128 more)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model, _ = build(args.model, args.method)
    torch.manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), device="cuda")
    report = {"model": args.model, "method": args.method, "new": args.new, "arms": []}
    for arm in args.arms.split(","):
        result = run_arm(model, ids, arm, args.calls, args.new)
        report["arms"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "tokens"}), flush=True)
        args.out.write_text(json.dumps(report))
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
