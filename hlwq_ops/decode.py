"""Greedy decoding of a transformers causal LM with the decode step in one CUDA graph.

``model.generate()`` with a static cache compiles the decode step with CUDA
graph trees, but per token it takes longer than the step replayed alone (on
an H200, Llama-3-8B shape: bf16 124-146 tok/s against 177-178 here, HLWQ Q5
74-106 against 242-245; ``benchmarks/RESULTS.md`` section 8b). A serving
engine instead captures the whole decode step once and replays it.
:class:`GraphDecoder` does that for any transformers causal LM (HLWQ weights
or not)::

    decoder = GraphDecoder(model)
    tokens = decoder.generate(input_ids, max_new_tokens=256)  # == model.generate(..., do_sample=False)

The prompt is prefilled eagerly; the step ``token, position -> next token``
(compiled with ``torch.compile``) is captured in a CUDA graph once per (batch,
length) and replayed for every token, with no host synchronization until the
end; the cache is reset in place between calls, so later calls reuse the graph.
On a CPU the same step simply runs (compiled or not), which is how the tests
check it against ``generate()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import StaticCache

__all__ = ["DecodeStats", "GraphDecoder"]


@dataclass
class DecodeStats:
    """Timings of the last :meth:`GraphDecoder.generate` (CUDA only; zeros elsewhere)."""

    prefill_s: float = 0.0  # prompt forward + first token: the time to first token
    decode_s: float = 0.0  # every later token
    new_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        """Decoded tokens per second per sequence (the first token excluded)."""
        return (self.new_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


class GraphDecoder:
    """Greedy decoding with a static KV cache and the decode step replayed from a CUDA graph.

    Args:
        model: a transformers causal LM (``model(input_ids, cache_position=...,
            past_key_values=...)`` returns ``.logits``).
        compile: compile the decode step with ``torch.compile``.
        cuda_graph: capture the step in a CUDA graph (default: when the model is on CUDA).
    """

    def __init__(self, model: torch.nn.Module, compile: bool = True, cuda_graph: bool | None = None):
        self.model = model
        self.device = next(model.parameters()).device
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self.compiled = compile
        self._warm = False
        self._step = torch.compile(self._decode_step, fullgraph=True) if compile else self._decode_step
        self.stats = DecodeStats()
        self._key: tuple[int, int] | None = None

    def _decode_step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """token: (B, 1), position: (1,) -> next token (B, 1)."""
        logits = self.model(input_ids=token, cache_position=position, past_key_values=self._cache, use_cache=True).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    def _cache_state(self) -> list[tuple[dict, object, torch.Tensor]]:
        """(container, key, tensor) for every tensor the cache holds: keys, values,
        position counters, and linear-attention states (kept in dicts)."""
        state = []
        for layer in getattr(self._cache, "layers", []):
            for name, value in vars(layer).items():
                if isinstance(value, torch.Tensor):
                    state.append((vars(layer), name, value))
                elif isinstance(value, dict):
                    state += [(value, k, v) for k, v in value.items() if isinstance(v, torch.Tensor)]
        return state

    def _warm_up(self, token: torch.Tensor, position: torch.Tensor) -> None:
        """Run the step a few times (compilation, kernel tuning) and leave the cache as it was.

        Warm-up steps write the cache: transformers' static layers advance their
        own position counter (``cumulative_length``, which 5.17 uses instead of
        ``cache_position``) and linear-attention layers their states. Every
        cache tensor is restored in place and re-bound, so its address (which a
        captured graph holds) and its contents are what they were.
        """
        saved = [(box, key, t, t.clone()) for box, key, t in self._cache_state()]
        for _ in range(3):
            self._step(token, position)
        for box, key, t, copy in saved:
            t.copy_(copy)
            box[key] = t

    def _capture(self, token: torch.Tensor, position: torch.Tensor):
        """Warm the step up on a side stream and capture it; returns (graph, output)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._warm_up(token, position)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._step(token, position)
        return graph, out

    def _prepare(self, batch: int, max_len: int) -> None:
        """One cache, static step inputs and graph per (batch, length), reused across calls."""
        if self._key == (batch, max_len):
            self._cache.reset()  # zeroes in place: the captured graph stays valid
            return
        self._key = (batch, max_len)
        self._cache = StaticCache(config=self.model.config, max_cache_len=max_len)
        self._token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self._position = torch.zeros(1, dtype=torch.long, device=self.device)
        self._graph = None

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation of ``input_ids`` (B, L): returns (B, L + max_new_tokens).

        Equal to ``model.generate(input_ids, max_new_tokens=..., do_sample=False)``
        for models without an end-of-sequence stop (every row runs to the end).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        batch, prompt = input_ids.shape
        self._prepare(batch, prompt + max_new_tokens)
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        logits = self.model(
            input_ids=input_ids,
            cache_position=torch.arange(prompt, device=self.device),
            past_key_values=self._cache,
            use_cache=True,
        ).logits
        out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=self.device)
        out[:, :1] = logits[:, -1].argmax(-1, keepdim=True)
        sync()
        prefill = time.perf_counter() - start

        self._token.copy_(out[:, :1])
        self._position.fill_(prompt)
        if self.cuda_graph and self._graph is None:
            self._graph, self._graph_out = self._capture(self._token, self._position)
        elif self.compiled and not self._warm:
            self._warm_up(self._token, self._position)  # compile outside the timed loop
            self._warm = True
        sync()
        start = time.perf_counter()
        for i in range(1, max_new_tokens):
            if self._graph is not None:
                self._graph.replay()
                nxt = self._graph_out
            else:
                nxt = self._step(self._token, self._position)
            out[:, i : i + 1] = nxt
            self._token.copy_(nxt)
            self._position += 1
        sync()
        self.stats = DecodeStats(prefill, time.perf_counter() - start, max_new_tokens)
        return torch.cat([input_ids, out.to(input_ids.dtype)], dim=1)
