"""GraphDecoder against ``generate()`` over many transformers architectures, on the CPU.

For each architecture, a tiny random float32 model (hidden 128, two layers, vocabulary 512, the weight matrices
redrawn with std 0.15 so that a prompt's padding changes its tokens; no end-of-sequence id, so every row runs to the
end) decodes ``NEW_TOKENS`` greedy tokens with :class:`hlwq_ops.decode.GraphDecoder` and with
``model.generate(..., do_sample=False, cache_implementation="static")``. Cases:

- ``eager`` / ``compiled``: ``GraphDecoder(model, compile=False / True)`` on two unpadded prompts;
- ``eager-padded`` / ``compiled-padded``: the same on three prompts of different lengths, left-padded with pad id 0
  and given an attention mask (``generate(..., attention_mask=mask, pad_token_id=0)``).

Each case calls ``GraphDecoder.generate`` twice (the second call reuses the cache). On the CPU ``cuda_graph`` is off,
so sliding-window models (which ``GraphDecoder(cuda_graph=True)`` refuses) run; the CUDA graphs themselves are not
exercised (the tests' CPU stand-in for them, ``tests/test_transformers.py``, is not part of this sweep). Where a
model's own ``generate()`` with a static cache fails (Falcon with ``alibi=True``), the reference is ``generate()``
with its default cache, and the line says so. MPT runs eagerly only: transformers marks it not compilable.
A config class the installed transformers lacks skips that architecture.

Prints one line per architecture and case (match / MISMATCH / error / skipped) and a summary; exits with 1 if
anything mismatched or failed.

    PYTHONPATH=. python benchmarks/sweep_architectures.py --list
    PYTHONPATH=. python benchmarks/sweep_architectures.py --cases eager eager-padded     # quick: no compilation
    PYTHONPATH=. python benchmarks/sweep_architectures.py --only llama falcon-alibi mamba --quantize
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
import transformers
from torchao.quantization import quantize_
from transformers import AutoModelForCausalLM, PretrainedConfig

from hlwq_ops import hlwq_q5
from hlwq_ops.decode import GraphDecoder

NEW_TOKENS = 8  # past a sliding window of 8 after a 7-token prompt
PROMPT_LEN = 7
VOCAB = 512
WEIGHT_STD = 0.15  # at the default 0.02 these tiny models' tokens hardly depend on their inputs (padding or not)
CASES = ("eager", "eager-padded", "compiled", "compiled-padded")

# in the vocabulary (several configs default to ids of their real vocabularies, past VOCAB); the padded prompts pad
# with id 0, generate()'s pad_token_id too
TOKENS = {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
# the common Llama-like sizes: head_dim 32, grouped-query attention
ATTENTION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, **TOKENS)
# head_dim given where a config defaults to its real model's (not hidden_size / heads)
HEAD_DIM = {"head_dim": 32}
MOE = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 64}
# Qwen3.5's and Qwen3-Next's gated-delta-net layers: one linear-attention layer, one full-attention layer
LINEAR_ATTENTION = {"linear_num_key_heads": 4, "linear_num_value_heads": 4, "linear_key_head_dim": 32,
                    "linear_value_head_dim": 32, "layer_types": ["linear_attention", "full_attention"]}
SLIDING = {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"]}
GPT2_LIKE = dict(n_embd=128, n_layer=2, n_head=4, n_positions=128, **TOKENS)
STATE_SPACE = dict(hidden_size=128, num_hidden_layers=2, state_size=8, **TOKENS)

# name -> (the config class, in transformers' namespace; its arguments). A class the installed transformers lacks
# skips that architecture instead of stopping the sweep.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", ATTENTION),
    "mistral": ("MistralConfig", dict(sliding_window=None, **ATTENTION)),
    "mistral-window": ("MistralConfig", dict(sliding_window=8, **ATTENTION)),
    "mixtral": ("MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2, **ATTENTION)),
    "qwen2": ("Qwen2Config", ATTENTION),
    "qwen2-moe": ("Qwen2MoeConfig", dict(shared_expert_intermediate_size=128, **MOE, **ATTENTION)),
    "qwen3": ("Qwen3Config", dict(**HEAD_DIM, **ATTENTION)),
    "qwen3-moe": ("Qwen3MoeConfig", dict(**MOE, **HEAD_DIM, **ATTENTION)),
    "qwen3.5": ("Qwen3_5TextConfig", dict(**LINEAR_ATTENTION, **HEAD_DIM, **ATTENTION)),
    "qwen3-next": ("Qwen3NextConfig", dict(
        shared_expert_intermediate_size=64, **MOE, **LINEAR_ATTENTION, **HEAD_DIM, **ATTENTION)),
    "gemma": ("GemmaConfig", dict(**HEAD_DIM, **ATTENTION)),
    # ``lm_head`` untied (as Gemma3's): tied, every row repeated its last prompt token, whatever its mask.
    "gemma2": ("Gemma2Config", dict(tie_word_embeddings=False, **SLIDING, **HEAD_DIM, **ATTENTION)),
    "gemma3": ("Gemma3TextConfig", dict(tie_word_embeddings=False, **SLIDING, **HEAD_DIM, **ATTENTION)),
    "phi": ("PhiConfig", ATTENTION),
    "phi3": ("Phi3Config", ATTENTION),
    "gpt2": ("GPT2Config", GPT2_LIKE),
    "gpt-neox": ("GPTNeoXConfig", dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, **TOKENS)),
    "gptj": ("GPTJConfig", dict(rotary_dim=16, **GPT2_LIKE)),
    "falcon": ("FalconConfig", dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, **TOKENS)),
    # Falcon's old architecture with ALiBi biases built from the 2D mask, as Bloom's.
    "falcon-alibi": ("FalconConfig", dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, alibi=True, new_decoder_architecture=False,
        multi_query=True, parallel_attn=True, bias=False, **TOKENS)),
    # Falcon-40B's layout: grouped key-value heads, two layer norms.
    "falcon-new-decoder": ("FalconConfig", dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True,
        **TOKENS)),
    # ``lm_head`` untied: tied, the tests' Bloom repeated one token a row whatever its mask.
    "bloom": ("BloomConfig", dict(hidden_size=128, n_head=4, n_layer=2, tie_word_embeddings=False, **TOKENS)),
    "opt": ("OPTConfig", dict(
        hidden_size=128, ffn_dim=256, word_embed_proj_dim=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, **TOKENS)),
    "starcoder2": ("Starcoder2Config", ATTENTION),
    "gpt-bigcode": ("GPTBigCodeConfig", GPT2_LIKE),
    "cohere": ("CohereConfig", ATTENTION),
    "cohere2": ("Cohere2Config", dict(**SLIDING, **ATTENTION)),
    "olmo": ("OlmoConfig", ATTENTION),
    "olmo2": ("Olmo2Config", ATTENTION),
    "granite": ("GraniteConfig", ATTENTION),
    "smollm3": ("SmolLM3Config", ATTENTION),
    "glm": ("GlmConfig", dict(**HEAD_DIM, **ATTENTION)),
    "glm4": ("Glm4Config", dict(**HEAD_DIM, **ATTENTION)),
    "mamba": ("MambaConfig", STATE_SPACE),
    "mamba2": ("Mamba2Config", dict(num_heads=4, head_dim=64, n_groups=1, **STATE_SPACE)),
    "falcon-mamba": ("FalconMambaConfig", STATE_SPACE),
    # Attention and a Mamba2 mixer side by side in every layer.
    "falcon-h1": ("FalconH1Config", dict(
        mamba_d_ssm=256, mamba_n_heads=8, mamba_d_head=32, mamba_d_state=16, mamba_chunk_size=16, **ATTENTION)),
    "mpt": ("MptConfig", dict(d_model=128, n_heads=4, n_layers=2, max_seq_len=128, **TOKENS)),
}


def make_config(name: str) -> PretrainedConfig:
    """Architecture ``name``'s config (:data:`ARCHITECTURES`); ImportError where transformers lacks its class."""
    class_name, arguments = ARCHITECTURES[name]
    config_class = getattr(transformers, class_name, None)
    if config_class is None:
        raise ImportError(f"transformers {transformers.__version__} has no {class_name}")
    return config_class(**arguments)


# Architectures whose compiled cases are skipped, and why. (Mamba, FalconMamba and Falcon-H1 are marked
# _can_compile_fullgraph = False too, but their steps compile on the CPU, where their mixers run torch code:
# GraphDecoder warns, and they are kept.)
EAGER_ONLY = {
    "mpt": "transformers marks MPT not compilable in one graph (_can_compile_fullgraph = False: its attention reads "
           "the static cache's length back to the host)",
}


@dataclass
class Prompts:
    """Seeded prompts: ``ids`` (2, L) unpadded; ``padded`` (3, L) left-padded with 0 where ``mask`` (3, L) is 0."""

    ids: torch.Tensor
    padded: torch.Tensor
    mask: torch.Tensor


@dataclass
class Outcome:
    status: str  # "match", "MISMATCH", "error" or "skipped"
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("MISMATCH", "error")


def make_prompts() -> Prompts:
    """Two unpadded prompts; three padded ones, of 7, 4 and 6 tokens (ids from 1: 0 is the pad id)."""
    ids = torch.randint(1, VOCAB, (2, PROMPT_LEN))
    mask = torch.ones(3, PROMPT_LEN, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :1] = 0
    padded = torch.randint(1, VOCAB, (3, PROMPT_LEN)).masked_fill(mask == 0, 0)
    return Prompts(ids, padded, mask)


def build_model(config: PretrainedConfig, quantize: bool) -> torch.nn.Module:
    """The float32 model of ``config`` with every 2-D parameter (linear layers, GPT-2's Conv1D, embeddings, Mamba's
    ``A_log`` too) redrawn with std ``WEIGHT_STD``, no end-of-sequence id, HLWQ Q5 if ``quantize``."""
    model = AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() == 2):
            weight.normal_(std=WEIGHT_STD)
    model.generation_config.eos_token_id = None  # every row runs to max_new_tokens
    if quantize:
        quantize_(model, hlwq_q5())
    return model


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# Architectures whose own generate() with a static cache fails (transformers 5.25: Falcon with ALiBi, "The size of
# tensor a (14) must match the size of tensor b (7)" unpadded, "too many values to unpack" padded): compared with
# generate()'s default cache. Any other failure of generate() is an error of the sweep.
STATIC_GENERATE_FAILS = {"falcon-alibi"}


@torch.no_grad()
def reference(model: torch.nn.Module, ids: torch.Tensor, static: bool, **mask) -> torch.Tensor:
    """``generate()``'s greedy tokens, with a static cache if ``static``, else with the model's default cache."""
    cache = {"cache_implementation": "static"} if static else {}
    return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, **cache, **mask)


def references(model: torch.nn.Module, prompts: Prompts, cases: list[str], static: bool,
               notes: list[str]) -> dict[str, torch.Tensor]:
    """``generate()``'s tokens for the prompts ``cases`` use: {"unpadded": (2, L + NEW_TOKENS), "padded": (3, ...)}.
    Notes where a padded prompt's mask leaves its tokens as they were (the padded cases then check little)."""
    expected = {}
    if any(not case.endswith("padded") for case in cases):
        expected["unpadded"] = reference(model, prompts.ids, static)
    if any(case.endswith("padded") for case in cases):
        expected["padded"] = reference(model, prompts.padded, static, attention_mask=prompts.mask, pad_token_id=0)
        unmasked = reference(model, prompts.padded, static, attention_mask=torch.ones_like(prompts.mask),
                             pad_token_id=0)
        if torch.equal(unmasked, expected["padded"]):
            notes.append("the mask does not change generate()'s tokens: the padded cases cannot fail")
    return expected


def compare(got: torch.Tensor, expected: torch.Tensor) -> Outcome:
    """match, or MISMATCH with the first row and new token that differ."""
    if got.shape != expected.shape:
        return Outcome("MISMATCH", f"shape {tuple(got.shape)}, generate() {tuple(expected.shape)}")
    differ = (got != expected)[:, PROMPT_LEN:]
    if not bool(differ.any()):
        return Outcome("match")
    row = int(differ.any(dim=1).nonzero()[0])
    token = int(differ[row].nonzero()[0])
    return Outcome("MISMATCH", f"row {row} from new token {token}: {got[row, PROMPT_LEN:].tolist()} against "
                               f"generate()'s {expected[row, PROMPT_LEN:].tolist()}")


def run_case(model: torch.nn.Module, case: str, prompts: Prompts, expected: torch.Tensor) -> Outcome:
    """One case: a new GraphDecoder, called twice (the second call resets and reuses the cache)."""
    compiled = case.startswith("compiled")
    mask = {"attention_mask": prompts.mask} if case.endswith("padded") else {}
    ids = prompts.padded if mask else prompts.ids
    torch._dynamo.reset()  # each case compiles afresh, far from dynamo's recompilation limit
    try:
        decoder = GraphDecoder(model, compile=compiled)
        for call in ("first call", "second call"):
            outcome = compare(decoder.generate(ids, NEW_TOKENS, **mask), expected)
            if outcome.failed:
                return Outcome(outcome.status, f"{call}: {outcome.detail}")
    except Exception as error:  # noqa: BLE001 (reported per case: one failure must not stop the sweep)
        return Outcome("error", first_line(error))
    return Outcome("match")


def sweep_architecture(name: str, cases: list[str], quantize: bool) -> tuple[dict[str, Outcome], list[str]]:
    """Every case of ``cases`` for architecture ``name`` -> ({case: outcome}, notes on the references); the outcome
    is {"-": outcome} where the architecture was skipped or its model or references could not be made."""
    try:
        config = make_config(name)
    except ImportError as error:
        return {"-": Outcome("skipped", f"transformers {transformers.__version__} lacks it ({first_line(error)})")}, []
    except Exception as error:  # noqa: BLE001 (a version whose config refuses the sizes: reported, the sweep goes on)
        return {"-": Outcome("error", f"its config: {first_line(error)}")}, []
    torch.manual_seed(0)
    notes: list[str] = []
    try:
        model = build_model(config, quantize)
        prompts = make_prompts()
        static = name not in STATIC_GENERATE_FAILS
        if not static:
            notes.append("its generate() with a static cache fails: compared with its default cache")
        expected = references(model, prompts, cases, static, notes)
    except Exception as error:  # noqa: BLE001 (reported: the sweep goes on)
        return {"-": Outcome("error", f"building the model or generate()'s tokens: {first_line(error)}")}, notes
    outcomes = {}
    for case in cases:
        if case.startswith("compiled") and name in EAGER_ONLY:
            outcomes[case] = Outcome("skipped", EAGER_ONLY[name])
        else:
            prompt = "padded" if case.endswith("padded") else "unpadded"
            outcomes[case] = run_case(model, case, prompts, expected[prompt])
    return outcomes, list(dict.fromkeys(notes))  # (each note once: the two references may fail alike)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(ARCHITECTURES),
                        help="architectures to run (default: all; --list names them)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES),
                        help="cases to run, in this order for each architecture (default: all)")
    parser.add_argument("--quantize", action="store_true", help="quantize every linear layer to HLWQ Q5 first")
    parser.add_argument("--list", action="store_true", help="list the architectures and exit")
    # the tiny models gain nothing from more threads, and on a CPU another job keeps busy two threads waited on each
    # other: a 7-token forward took 0.25 s against 0.005 with one
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op CPU threads (default: 1)")
    return parser.parse_args(argv)


def print_summary(results: dict[str, dict[str, Outcome]]) -> None:
    counts: dict[str, int] = {}
    for outcomes in results.values():
        for outcome in outcomes.values():
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
    failed = [f"{name} {case}" for name, outcomes in results.items()
              for case, outcome in outcomes.items() if outcome.failed]
    print("summary: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) +
          f" over {len(results)} architectures")
    if failed:
        print("failed: " + "; ".join(failed))


def print_architecture(name: str, outcomes: dict[str, Outcome], notes: list[str], seconds: float) -> None:
    for note in notes:
        print(f"{name:<20} note: {note}")
    for case, outcome in outcomes.items():
        print(f"{name:<20} {case:<16} {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
    print(f"{name:<20} ({seconds:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(f"{name}{' (eager only)' if name in EAGER_ONLY else ''}" for name in ARCHITECTURES))
        return 0
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # (config validation and generate() chatter about the tiny models)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; float32"
          f"{', HLWQ Q5' if args.quantize else ''}; {NEW_TOKENS} new tokens; {args.threads} thread(s); "
          f"cases: {' '.join(args.cases)}", flush=True)
    start = time.perf_counter()
    results = {}
    for name in args.only or list(ARCHITECTURES):
        began = time.perf_counter()
        results[name], notes = sweep_architecture(name, args.cases, args.quantize)
        print_architecture(name, results[name], notes, time.perf_counter() - began)
    print_summary(results)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    return 1 if any(o.failed for outcomes in results.values() for o in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
