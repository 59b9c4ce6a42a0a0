"""Quantize a small transformers causal LM to HLWQ Q5, compile it, and generate (also with GraphDecoder).

The model is built from a config with random weights (nothing is downloaded):

    python examples/quickstart.py
"""

import torch
from torchao.quantization import quantize_
from transformers import LlamaConfig, LlamaForCausalLM

from hlwq_ops import hlwq_q5
from hlwq_ops.decode import GraphDecoder
from hlwq_ops.utils import model_nbytes


def main() -> None:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    reference = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    reference.load_state_dict(model.state_dict())
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)

    size_before = model_nbytes(model)
    quantize_(model, hlwq_q5())  # every nn.Linear, lm_head included
    size_after = model_nbytes(model)

    # Faster decoding: on a GPU the decode step is compiled, captured once in a CUDA graph and replayed per token.
    tokens_graph = GraphDecoder(model, compile=device == "cuda").generate(prompt, max_new_tokens=8)

    model.forward = torch.compile(model.forward, fullgraph=True, dynamic=True)
    with torch.no_grad():
        logits_ref = reference(prompt).logits.float()
        logits = model(prompt).logits.float()
        tokens = model.generate(prompt, max_new_tokens=8, do_sample=False)
        tokens_ref = reference.generate(prompt, max_new_tokens=8, do_sample=False)

    agree = (logits.argmax(-1) == logits_ref.argmax(-1)).float().mean().item()
    rel = ((logits - logits_ref).norm() / logits_ref.norm()).item()
    cos = torch.nn.functional.cosine_similarity(logits.flatten(), logits_ref.flatten(), dim=0).item()
    print(f"device: {device}, dtype: {dtype}")
    print(f"model size: {size_before / 2**20:.2f} MiB -> {size_after / 2**20:.2f} MiB (HLWQ Q5)")
    print(f"prompt logits vs unquantized: top-1 agreement {agree:.1%}, relative error {rel:.4f}, cosine {cos:.5f}")
    print(f"generated (HLWQ Q5):   {tokens[0, prompt.shape[1]:].tolist()}")
    print(f"generated (reference): {tokens_ref[0, prompt.shape[1]:].tolist()}")
    print(f"GraphDecoder (HLWQ Q5): {tokens_graph[0, prompt.shape[1]:].tolist()}")


if __name__ == "__main__":
    main()
