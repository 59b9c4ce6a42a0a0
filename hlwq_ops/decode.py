"""Greedy decoding of a transformers causal LM with the decode step in one CUDA graph.

``model.generate()`` with a static cache compiles the decode step with CUDA
graph trees, but per token it also runs dynamo's guards and the compiled
wrapper in Python (on an H200, Llama-3-8B shape, batch 1: bf16 123.0 tok/s
against 176.1 here, HLWQ Q5 106.1 against 241.8; ``benchmarks/RESULTS.md``
sections 9d and 9e). A serving engine instead captures the whole decode step
once and replays it. :class:`GraphDecoder` does that for any transformers
causal LM (HLWQ weights or not)::

    decoder = GraphDecoder(model)
    tokens = decoder.generate(input_ids, max_new_tokens=256)  # == model.generate(..., do_sample=False)
    tokens = decoder.generate(padded_ids, 256, attention_mask=mask)  # prompts of different lengths, left-padded

The step ``token, position, mask, row positions -> next token`` (compiled with ``torch.compile``,
HLWQ projections of one input in one GEMV: :mod:`hlwq_ops.grouping`) is
captured in a CUDA graph once per (batch, length) and replayed for every
token. With ``prompt_graph=True`` (opt-in) the prompt's
forward (eager: compiling it would take each prompt length a compile of its
own) is captured too, once per (batch, length, prompt length), and replayed in
later calls: eagerly, every projection's call pays the host its Python and
launches, and a short prompt's forward waits on the host (Llama-3-8B-shaped,
128 tokens, H100: the time to first token of a call repeating the shapes
71.7 ms eager, 11.3 replayed for Q5; 37.9 and 11.3 for bf16;
``benchmarks/RESULTS.md`` 58a). Without end-of-sequence ids nothing
waits for the GPU until the end; with them, every ``check_every`` tokens the
host checks whether every row has produced one, and stops if so (a row's
tokens after its first are the pad token, as in ``generate()``). The cache is
reset in place between calls, so later calls reuse the graph.
On a CPU the same step simply runs (compiled or not), which is how the tests
check it against ``generate()``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, StaticCache

from .attention import packed_decode_attention
from .grouping import GroupProjections

__all__ = ["DecodeStats", "GraphDecoder", "cache_argument", "greedy_tokens"]


def _prompt_mask_spans_cache(config: PretrainedConfig) -> bool:
    """Whether the prompt's forward gets its attention mask padded with zeros to the cache's length, not the
    prompt's, as ``generate()`` with a static cache gives it to Bloom, which builds its ALiBi biases from the 2D mask,
    one per key, and the static cache's keys span its whole length (transformers 5.17 pads it in Bloom's
    ``prepare_inputs_for_generation``, 5.25 in its ``create_masks_for_generate``). Falcon with ``alibi=True`` builds
    them so too: unpadded, its prompt failed here as its own ``generate()`` with a static cache fails ("The size of
    tensor a (11) must match the size of tensor b (6)", transformers 5.25); padded, its tokens are those of
    ``generate()`` with its default cache.
    Every other model gets the prompt's mask: some read it position by position against the prompt (Qwen3.5's
    linear-attention layers zero padded rows), and transformers' masking functions pad it themselves."""
    return config.model_type == "bloom" or (config.model_type == "falcon" and bool(getattr(config, "alibi", False)))


# Models whose ``generate()`` gives the steps after the prompt no attention mask (their
# ``prepare_inputs_for_generation`` sets it to None past the first iteration; transformers 5.17 and 5.25): their
# mixers multiply each input position by the mask's entry, and a step's mask over the whole cache would broadcast the
# one token to the cache's length (at batch > 1: other tokens than generate()'s, silently).
_STEP_WITHOUT_MASK = ("mamba", "mamba2", "falcon_mamba")


def _forward_parameters(model: torch.nn.Module) -> Mapping[str, inspect.Parameter]:
    """``model.forward``'s parameters; a ``torch.compile``d model is read through to the module it wraps (its own
    ``forward`` takes ``*args``)."""
    return inspect.signature(getattr(model, "_orig_mod", model).forward).parameters


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword ``model.forward`` takes its KV cache by: ``cache`` in newer transformers (5.25, where
    ``past_key_values`` warns that it goes in 5.40), ``past_key_values`` in older ones (5.17), ``cache_params``
    where a state-space model takes only that (Mamba2 in 5.17, whose ``**kwargs`` swallowed ``past_key_values``:
    every forward made a cache of its own); ``past_key_values`` where ``forward`` names none of them."""
    parameters = _forward_parameters(model)
    return next((name for name in ("cache", "past_key_values", "cache_params") if name in parameters),
                "past_key_values")


@dataclass
class DecodeStats:
    """Timings of the last :meth:`GraphDecoder.generate` (host wall time, after a device synchronization)."""

    prefill_s: float = 0.0  # prompt forward + first token: the time to first token
    decode_s: float = 0.0  # every later token
    new_tokens: int = 0  # tokens computed per row: may exceed those returned by up to check_every - 1 steps

    @property
    def decode_tokens_per_s(self) -> float:
        """Decoded tokens per second per sequence (the first token excluded)."""
        return (self.new_tokens - 1) / self.decode_s if self.decode_s > 0 else 0.0


# generation_config settings that change greedy output in generate() and that GraphDecoder does not apply,
# with their neutral values
_IGNORED_SETTINGS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "min_new_tokens": (None, 0),
    "min_length": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "bad_words_ids": (None,),
    "sequence_bias": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "num_beams": (None, 1),
    "num_beam_groups": (None, 1),
    "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
    "penalty_alpha": (None, 0.0),
    "dola_layers": (None,),
    "watermarking_config": (None,),
    "token_healing": (None, False),
}


@dataclass
class _PromptGraph:
    """The prompt's forward captured (:meth:`GraphDecoder._capture_prompt`): replayed on its inputs' buffers."""

    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor  # (B, L): the prompt's length is this buffer's
    positions: torch.Tensor  # (B, L)
    token: torch.Tensor  # (B, 1): the first new token, the graph's output
    # the cache's Python values as the prompt's forward leaves them (a linear-attention layer's "has a previous
    # state" flags), which a replay, running no Python, does not set: put back after each (GraphDecoder._python_state)
    python_state: list[tuple[dict, dict]]


# Parts of the vocabulary a compiled step's greedy token is first picked in: Inductor reduces an argmax in one
# program per row (it splits no arg reduction; torch 2.11 and 2.13), which took 30.5 us of the Llama-3-8B-shaped step
# on an H100 for 128256 logits, on one SM (benchmarks/NOTES.md, session 72).
_ARGMAX_PARTS = 64


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(-1, keepdim=True)`` of (B, V) logits, in two reductions a compiler can spread over the GPU:
    each of ``_ARGMAX_PARTS`` parts' maximum and its first index, then the first part with the largest. The same
    index as ``argmax``: the first of equal maxima (a NaN counts as the largest, as there)."""
    batch, vocab = logits.shape
    width = -(-vocab // _ARGMAX_PARTS)
    padded = torch.nn.functional.pad(logits, (0, width * _ARGMAX_PARTS - vocab), value=float("-inf"))
    values, within = padded.view(batch, _ARGMAX_PARTS, width).max(-1)
    part = values.argmax(-1, keepdim=True)
    return within.gather(-1, part) + part * width


# Steps of the decode step run before the timed loop (compilation, tuning, a CUDA graph's warm-up): they write
# the cache past the prompt, so it holds at least this many positions more
_WARM_UP_STEPS = 3


class GraphDecoder:
    """Greedy decoding with a static KV cache and the decode step replayed from a CUDA graph.

    Args:
        model: a transformers causal LM (``model(input_ids, cache_position=...,
            cache=...)`` returns ``.logits``; ``past_key_values=...`` where its
            ``forward`` still names the cache that way, as transformers 5.17 does).
        compile: compile the decode step with ``torch.compile``.
        cuda_graph: capture the step in a CUDA graph (default: when the model is on CUDA).
            ValueError for a model with sliding-window layers, whose step depends on a
            Python counter that a graph cannot replay.
        group_projections: compile the step with :class:`hlwq_ops.grouping.GroupProjections`
            (the HLWQ projections of one input -- q, k and v; gate and up -- in one GEMV at
            batch 1, behind one FWHT at larger batches), after Inductor's ``post_grad_custom_post_pass`` where
            one is set.
        prompt_graph: capture the prompt's forward in a CUDA graph as well (needs
            ``cuda_graph``), at the first call of a cache and prompt length, and replay it in later
            ones (Llama-3-8B-shaped Q5, 128 tokens, H100: time to first token 11.2 ms against
            46-72 eagerly; RESULTS 58a, 59a). One prompt graph is kept: a call with another
            prompt length runs the forward eagerly to warm up, then captures and replays it,
            more than the eager forward's time, so it pays only where prompt lengths repeat
            (prompts left-padded to a few lengths). Off by default, for that and because a
            model whose prompt forward cannot be captured raises (OPT's could not on an H100
            while it was given no mask), and torch leaves a failed capture's process with its
            CUDA random generator unusable ("Offset increment outside graph capture"). Tested
            on Llama, Qwen3, Qwen3.5 and OPT models on a GPU, Bloom on the CPU only. Its tokens
            may differ from ``generate()``'s where two logits nearly tie: while a stream
            captures, transformers builds an explicit causal mask for an unpadded prompt instead
            of asking SDPA for ``is_causal``, which can round otherwise (or pick another SDPA
            backend).
        packed_attention: while decoding, the model's grouped-query SDPA layers attend a step's one
            position with the query heads of each key/value head as its queries
            (:func:`hlwq_ops.attention.packed_decode_attention`), instead of transformers copying the
            cache's key and value heads once per query head every step; the prompt's forward is
            unchanged. For the length of each :meth:`generate` call transformers' ``"sdpa"``
            attention is that function, in the whole process. Off by default: on an H100
            (Llama-3-8B shape, batch 1, RESULTS 72) cuDNN attends the packed queries with a
            slower kernel (11.1 us a layer against 7.9), and the Q5 step took 18 us longer
            with it (bf16's 65 us shorter); with ``combo_kernels`` the copies it saves are
            fused into other kernels, and the Q5 step took 99 us longer.
        combo_kernels: compile the step with Inductor's combo kernels, which launch independent
            small kernels (the rotary embedding, the cache writes, the repeat of the key and value
            heads) together: two a layer instead of six. On an H100 (Llama-3-8B shape, batch 1,
            RESULTS 72) the Q5 step took 189 us less (3534 -> 3345 us), bf16's 190 less. Either
            value is passed to the step's compile, over Inductor's global ``combo_kernels``.
    """

    def __init__(self, model: torch.nn.Module, compile: bool = True, cuda_graph: bool | None = None,
                 group_projections: bool = True, prompt_graph: bool = False, packed_attention: bool = False,
                 combo_kernels: bool = True):
        self.model = model
        self.packed_attention = packed_attention
        self.device = next(model.parameters()).device
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        if prompt_graph and not self.cuda_graph:
            raise ValueError("GraphDecoder(prompt_graph=True) captures the prompt's forward in a CUDA graph, which "
                             f"needs cuda_graph=True (the default on CUDA); the model is on {self.device}, "
                             f"cuda_graph={cuda_graph}")
        self.prompt_graph = prompt_graph
        if self.cuda_graph:
            self._check_graph_can_replay(StaticCache(config=model.config, max_cache_len=1))  # allocates nothing
        self.compiled = compile
        if (compile or self.cuda_graph) and not getattr(model, "_can_compile_fullgraph", True):
            # (MPT: its attention reads the static cache's length back to the host, which dynamo cannot trace and a
            # CUDA graph cannot capture)
            warnings.warn(
                f"transformers marks {type(model).__name__} as not compilable in one graph (_can_compile_fullgraph "
                f"is False): GraphDecoder's compiled step (compile={compile}) or CUDA graph "
                f"(cuda_graph={self.cuda_graph}) may fail for it; GraphDecoder(model, compile=False, cuda_graph=False) "
                "runs its step eagerly",
                stacklevel=2,
            )
        self._cache_arg = cache_argument(model)
        # the prompt's forward computes only the last position's logits, as generate() asks: the others would take
        # (B, L, vocab) of memory in the call's peak (Llama-3-8B, 128 tokens: 31 MiB a row) and an lm_head GEMM of
        # L rows
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in _forward_parameters(model) else {}
        # every forward is given an attention mask and positions, as generate() gives them (the steps of the models
        # of _STEP_WITHOUT_MASK no mask, as theirs), prompts without padding too: without, some models count them
        # from the static cache's length, a value on the device -- OPT builds its mask as torch.ones(B, length),
        # which a CUDA graph cannot capture (the length is read back to the host; transformers 5.17 and 5.25) and,
        # with 5.17, a compiled step cannot trace (a data-dependent size)
        self._takes_positions = "position_ids" in _forward_parameters(model)
        self._prompt_mask_spans_cache = _prompt_mask_spans_cache(model.config)
        self._step_takes_mask = model.config.model_type not in _STEP_WITHOUT_MASK
        self._warm = False
        self._step = self._compiled(group_projections, combo_kernels) if compile else self._decode_step
        self.stats = DecodeStats()
        self._key: tuple[int, int] | None = None
        # every capture's warm-up on one stream: torch keeps a cuBLAS workspace (lm_head's GEMM) for each stream
        # cuBLAS ran on, and a new stream per (batch, length) came from a pool of 32
        self._side_stream: torch.cuda.Stream | None = None

    def _compiled(self, group_projections: bool, combo_kernels: bool):
        """The decode step compiled (``fullgraph``), with :class:`GroupProjections` and combo kernels if asked."""
        options = {"combo_kernels": combo_kernels}
        if group_projections:
            then = torch._inductor.config.post_grad_custom_post_pass  # (the caller's passes, kept: run after)
            options["post_grad_custom_post_pass"] = GroupProjections(then)
        return torch.compile(self._decode_step, fullgraph=True, options=options)

    @staticmethod
    def _check_graph_can_replay(cache: StaticCache) -> None:
        """Refuse sliding-window layers: transformers 5.17 keeps their length in a Python int
        (``cumulative_length_int``) that sets the attention mask's query position and, past the
        window, how the cache is updated; a CUDA graph would replay every step as captured."""
        layers = getattr(cache, "layers", [])
        sliding = [i for i, layer in enumerate(layers) if getattr(layer, "is_sliding", False)]
        if sliding:
            kinds = sorted({type(layers[i]).__name__ for i in sliding})
            raise ValueError(
                f"GraphDecoder(cuda_graph=True) cannot replay a sliding-window cache: layers {sliding} of "
                f"{len(layers)} are {', '.join(kinds)}, whose length is a Python int that a CUDA graph freezes "
                "at capture (later tokens would get the first token's attention mask). Use "
                "GraphDecoder(model, cuda_graph=False) (the compiled step without a graph) or model.generate()"
            )

    def _decode_step(
        self, token: torch.Tensor, position: torch.Tensor, mask: torch.Tensor, row_position: torch.Tensor
    ) -> torch.Tensor:
        """token: (B, 1), position: (1,), its slot in the cache -> next token (B, 1).

        ``mask`` (B, max_len) is the attention mask of the whole cache (ones past
        the prompt; not given to the models of ``_STEP_WITHOUT_MASK``, as ``generate()`` does not),
        ``row_position`` (B, 1) each row's own position of ``token`` as
        ``generate()`` numbers it (its prompt's padding not counted; a row padded on
        the right counts on from its padding's 0).
        """
        logits = self.model(
            input_ids=token, cache_position=position, use_cache=True, **{self._cache_arg: self._cache},
            **self._mask_and_positions(mask if self._step_takes_mask else None, row_position),
        ).logits
        return greedy_tokens(logits[:, -1])

    def _mask_and_positions(self, mask: torch.Tensor | None, positions: torch.Tensor) -> dict:
        """A forward's ``attention_mask`` and, where ``forward`` takes them, ``position_ids``."""
        given = {"attention_mask": mask}
        return {**given, "position_ids": positions} if self._takes_positions else given

    def _cache_boxes(self) -> list[dict]:
        """The attributes of every cache layer, and the dicts a layer holds (linear-attention states and flags)."""
        boxes = []
        for layer in getattr(self._cache, "layers", []):
            boxes += [vars(layer), *(v for v in vars(layer).values() if isinstance(v, dict))]
        return boxes

    def _save_cache(self) -> list[tuple[dict, dict]]:
        """Every attribute of every cache layer, and the entries of the dicts a layer holds
        (linear-attention states), as (container, {name: (value, clone of a tensor, else None)})."""
        return [
            (box, {k: (v, v.clone() if isinstance(v, torch.Tensor) else None) for k, v in box.items()})
            for box in self._cache_boxes()
        ]

    def _python_state(self) -> list[tuple[dict, dict]]:
        """The cache's values that are not tensors (flags, counters), as (container, {name: value}): what a CUDA
        graph's replay neither reads nor writes, as the forward's Python ran only while capturing."""
        return [(box, {k: v for k, v in box.items() if not isinstance(v, (torch.Tensor, dict))})
                for box in self._cache_boxes()]

    @staticmethod
    def _set_python_state(state: list[tuple[dict, dict]]) -> None:
        for box, values in state:
            box.update(values)

    @staticmethod
    def _restore_cache(saved: list[tuple[dict, dict]]) -> None:
        """Put back what :meth:`_save_cache` saw: each tensor refilled in place and re-bound (a captured
        graph holds its address), every other value (a Python counter, a flag) re-bound, and names
        added since removed."""
        for box, items in saved:
            box.clear()
            for key, (value, copy) in items.items():
                if copy is not None:
                    value.copy_(copy)
                box[key] = value

    def _warm_up(self) -> None:
        """Run the step a few times (compilation, kernel tuning) and leave the cache as it was.

        Warm-up steps write the cache: transformers' static layers advance their
        position counter (``cumulative_length``, which 5.17 uses instead of
        ``cache_position``), sliding-window layers also a Python int
        (``cumulative_length_int``) that picks their update and attention mask,
        and linear-attention layers their states. All of it is put back.
        """
        saved = self._save_cache()
        for _ in range(_WARM_UP_STEPS):
            self._step(*self._inputs)
        self._restore_cache(saved)

    def _on_side_stream(self, work) -> None:
        """Run ``work()`` on the side stream every capture warms up on, ordered after and before the current one."""
        if self.device.type != "cuda":
            raise ValueError(
                f"GraphDecoder(cuda_graph=True) captures a CUDA graph: the model is on {self.device}; "
                "use cuda_graph=False (the default off CUDA)"
            )
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        stream = self._side_stream
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            work()
        torch.cuda.current_stream().wait_stream(stream)

    @staticmethod
    def _graphed(forward):
        """``forward()`` captured in a CUDA graph (which runs nothing until replayed): (graph, its output)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = forward()
        return graph, out

    def _capture(self):
        """Warm the step up on a side stream and capture it; returns (graph, output)."""
        self._on_side_stream(self._warm_up)
        try:
            return self._graphed(lambda: self._step(*self._inputs))
        except torch.OutOfMemoryError:
            raise  # (a RuntimeError too, but not the model's forward refusing a capture)
        except RuntimeError as error:
            way_out = "GraphDecoder(model, cuda_graph=False) runs the step without a graph"
            if not self.compiled:  # (Bloom's eager attention mask under transformers 5.17: its compiled step captured)
                way_out += "; compiled (GraphDecoder(model), the default) it may capture where the eager one does not"
            raise self._capture_failed("decode step", error, way_out) from error

    def _capture_failed(self, what: str, error: RuntimeError, way_out: str) -> RuntimeError:
        """The error of a forward that could not be captured: the model, torch's reason, the way out, and what a
        failed capture leaves behind."""
        return RuntimeError(
            f"GraphDecoder could not capture {type(self.model).__name__}'s {what} in a CUDA graph ({error}); "
            f"{way_out}. torch may leave a process whose capture failed unable to use CUDA's random generator "
            "(\"Offset increment outside graph capture\"): start a new one")

    def _prompt_token(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The prompt's forward into the cache -> each row's first new token (B, 1). ``positions``: each row's
        positions (B, L) as ``generate()`` numbers them, with :attr:`_mask` holding the prompt's mask."""
        prompt = input_ids.shape[1]
        mask = self._mask[:, :prompt]
        if self._prompt_mask_spans_cache:
            mask = torch.nn.functional.pad(mask, (0, self._mask.shape[1] - prompt))  # zeros past the prompt
        logits = self.model(
            input_ids=input_ids,
            cache_position=torch.arange(prompt, device=self.device),
            use_cache=True,
            **{self._cache_arg: self._cache},
            **self._mask_and_positions(mask, positions),
            **self._last_logits,
        ).logits
        return logits[:, -1].argmax(-1, keepdim=True)

    def _capture_prompt(self, input_ids: torch.Tensor, positions: torch.Tensor) -> _PromptGraph:
        """Warm the prompt's forward up on the side stream (it tunes the kernels for the prompt's rows), then
        capture it on copies of its inputs into the empty cache, as a call's prompt runs, with the Python values it
        leaves in the cache; returns with the cache empty."""
        ids, positions = input_ids.clone(), positions.clone()
        self._on_side_stream(lambda: self._prompt_token(ids, positions))
        # emptied in place (the graphs hold its addresses), flags included: captured after the warm-up's flags, a
        # linear-attention layer's forward would take the path of a prompt continuing the cache
        self._cache.reset()
        try:
            graph, token = self._graphed(lambda: self._prompt_token(ids, positions))
        except torch.OutOfMemoryError:
            raise  # (a RuntimeError too, but not the model's forward refusing a capture)
        except RuntimeError as error:
            raise self._capture_failed("prompt forward", error, "GraphDecoder(model) runs it eagerly") from error
        captured = _PromptGraph(graph, ids, positions, token, self._python_state())
        self._cache.reset()  # (the flags the capture's forward set)
        return captured

    def _first_token(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The prompt's forward into the (empty) cache -> the first new token (B, 1): eagerly, or replayed from the
        prompt's graph, captured first where this cache has none of the prompt's length."""
        if not self.prompt_graph:
            return self._prompt_token(input_ids, positions)
        if self._prompt is None or self._prompt.ids.shape[1] != input_ids.shape[1]:
            self._prompt = None  # (its pool freed before the next capture)
            self._prompt = self._capture_prompt(input_ids, positions)
        self._prompt.ids.copy_(input_ids)
        self._prompt.positions.copy_(positions)
        self._prompt.graph.replay()
        self._set_python_state(self._prompt.python_state)
        return self._prompt.token

    def _prepare(self, batch: int, max_len: int) -> None:
        """One cache, static step inputs and graph per (batch, length), reused across calls."""
        if self._key == (batch, max_len):
            self._cache.reset()  # zeroes in place: the captured graph stays valid
            return
        self._key = (batch, max_len)
        self._warm = False  # new shapes: compile before the timed loop again
        self._cache = StaticCache(config=self.model.config, max_cache_len=max_len)
        self._token = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self._position = torch.zeros(1, dtype=torch.long, device=self.device)
        self._mask = torch.ones(batch, max_len, dtype=torch.long, device=self.device)
        self._row_position = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self._inputs = (self._token, self._position, self._mask, self._row_position)
        self._graph = None
        self._prompt: _PromptGraph | None = None

    @staticmethod
    def _check_mask(attention_mask: torch.Tensor, input_ids: torch.Tensor, what: str = "attention_mask") -> None:
        """A (B, L) mask of 0/1; padding on the right gets a warning, as in ``generate()``."""
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"{what} must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        mask = attention_mask.long()
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{what} must hold only 0 (padding) and 1 (tokens)")
        if not bool((mask[:, -1] == 1).all()):
            warnings.warn(
                f"{what} pads a row on the right: a decoder-only model continues from the padding "
                "(as in generate()); pad prompts on the left",
                stacklevel=5,
            )

    def _special_tokens(self, eos_token_id, pad_token_id) -> tuple[list[int], int | None]:
        """The end-of-sequence ids (an int, a list or a tensor; none: never stop) and the pad id,
        defaulting as ``generate()`` does: the generation config's, else the first end-of-sequence id."""
        config = getattr(self.model, "generation_config", None)
        if eos_token_id is None:
            eos_token_id = getattr(config, "eos_token_id", None)
        eos = [] if eos_token_id is None else [int(t) for t in torch.as_tensor(eos_token_id).reshape(-1).tolist()]
        if pad_token_id is None:
            pad_token_id = getattr(config, "pad_token_id", None)
        if pad_token_id is None and eos:
            pad_token_id = eos[0]
        return eos, None if pad_token_id is None else int(pad_token_id)

    def _warn_ignored_settings(self) -> None:
        config = getattr(self.model, "generation_config", None)
        ignored = [name for name, neutral in _IGNORED_SETTINGS.items() if getattr(config, name, None) not in neutral]
        if ignored:
            warnings.warn(
                f"GraphDecoder decodes greedily and does not apply generation_config's {', '.join(ignored)}: "
                "its tokens differ from generate()'s where those settings act",
                stacklevel=5,  # the caller of generate() (under torch.no_grad's wrapper)
            )

    @staticmethod
    def _all_stopped(tokens: torch.Tensor, eos: torch.Tensor) -> bool:
        """Whether every row of ``tokens`` (B, T) holds an end-of-sequence id (a host synchronization)."""
        return bool(torch.isin(tokens, eos).any(dim=1).all())

    @staticmethod
    def _pad_after_stop(tokens: torch.Tensor, eos: torch.Tensor, pad: int) -> torch.Tensor:
        """Each row's tokens after its first end-of-sequence id become ``pad``; if every row stopped,
        the columns after the last row's stop are dropped (``generate()``'s output)."""
        hit = torch.isin(tokens, eos)
        after = (hit.cumsum(dim=1) - hit.long()) > 0
        tokens = tokens.masked_fill(after, pad)
        if hit.any(dim=1).all():
            tokens = tokens[:, : int((~after).sum(dim=1).max())]
        return tokens

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        check_every: int = 16,
    ) -> torch.Tensor:
        """Greedy continuation of ``input_ids`` (B, L): returns (B, L + up to max_new_tokens).

        Equal to ``model.generate(input_ids, max_new_tokens=..., do_sample=False)``.

        Args:
            attention_mask: (B, L), 0 on padding (prompts of different
                lengths, padded on the left), as for ``generate()``. Without it,
                as there, the positions holding the pad id are padding unless the
                pad id is an end-of-sequence id.
            eos_token_id: the ids that end a row (default: the model's
                ``generation_config``; ``[]`` decodes every row to ``max_new_tokens``).
            pad_token_id: what follows a row's end (default: the generation
                config's, else the first end-of-sequence id).
            check_every: tokens between checks whether every row has ended (each
                check waits for the GPU; up to ``check_every - 1`` steps may run past
                the end, and their tokens are dropped).
        """
        # (the step is compiled and captured within the block: dynamo guards on the attention function)
        with packed_decode_attention(self.model) if self.packed_attention else nullcontext():
            return self._generate(input_ids, max_new_tokens, attention_mask, eos_token_id, pad_token_id, check_every)

    def _generate(self, input_ids, max_new_tokens, attention_mask, eos_token_id, pad_token_id, check_every):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.is_complex() or 0 in input_ids.shape:
            raise ValueError(f"input_ids must be a (batch, length) tensor of token ids with both sizes >= 1, got "
                             f"{input_ids.dtype} of shape {tuple(input_ids.shape)} (one prompt: input_ids[None])")
        self._warn_ignored_settings()
        eos_ids, pad = self._special_tokens(eos_token_id, pad_token_id)
        eos = torch.tensor(eos_ids, device=self.device) if eos_ids else None
        batch, prompt = input_ids.shape
        if attention_mask is not None:
            self._check_mask(attention_mask, input_ids)
        elif pad is not None and pad not in eos_ids and bool((input_ids == pad).any()):
            attention_mask = (input_ids != pad).long()  # generate()'s inference
            self._check_mask(attention_mask, input_ids, f"the mask inferred from pad_token_id={pad}")
        self._prepare(batch, prompt + max(max_new_tokens, _WARM_UP_STEPS))
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        if attention_mask is None:  # (generate() makes this mask too)
            attention_mask = torch.ones_like(input_ids, dtype=torch.long)
        mask = attention_mask.to(self.device, torch.long)
        self._mask[:, :prompt] = mask
        self._mask[:, prompt:] = 1  # the tokens to come (in place: a captured graph reads this buffer)
        positions = (mask.cumsum(dim=1) - 1).masked_fill(mask == 0, 0)  # as generate() numbers them
        # each row's position of its first new token: its last prompt position's next, as generate() counts on
        # (a row padded on the right goes on from its last padding's 0)
        self._row_position.copy_(positions[:, -1:] + 1)
        out = torch.empty(batch, max_new_tokens, dtype=torch.long, device=self.device)
        out[:, :1] = self._first_token(input_ids, positions)
        sync()
        prefill = time.perf_counter() - start

        self._token.copy_(out[:, :1])
        self._position.fill_(prompt)
        if self.cuda_graph:
            if self._graph is None:  # (later calls replay it: no warm-up again, no copy of the cache)
                self._graph, self._graph_out = self._capture()
        elif self.compiled and not self._warm:
            self._warm_up()  # compile outside the timed loop
            self._warm = True
        sync()
        start = time.perf_counter()
        done = max_new_tokens
        for i in range(1, max_new_tokens):
            if eos is not None and i % check_every == 0 and self._all_stopped(out[:, :i], eos):
                done = i
                break
            if self._graph is not None:
                self._graph.replay()
                nxt = self._graph_out
            else:
                nxt = self._step(*self._inputs)
            out[:, i : i + 1] = nxt
            self._token.copy_(nxt)
            self._position += 1
            self._row_position += 1
        sync()
        self.stats = DecodeStats(prefill, time.perf_counter() - start, done)
        out = out[:, :done]
        if eos is not None:
            out = self._pad_after_stop(out, eos, pad)
        return torch.cat([input_ids, out.to(input_ids.dtype)], dim=1)
