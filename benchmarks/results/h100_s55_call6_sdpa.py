"""Session 55, call 6 (benchmarks/RESULTS.md 55c), run inline on call 5's H100 (``python3 - <<EOF``): does SDPA
alone repeat bit for bit at the decode step's shapes, 224 and 384 keys, with an additive mask? Its output:

    224 mask mismatches of 500: 0
    224 nomask mismatches of 500: 0
    224 FLASH_ATTENTION n/a RuntimeError   (flash takes no attn_mask)
    224 EFFICIENT_ATTENTION mismatches of 300: 0
    224 CUDNN_ATTENTION mismatches of 300: 0
    224 MATH mismatches of 300: 0
    384 (the same six lines, the same counts)
"""
import torch
import torch.nn.functional as F

torch.manual_seed(0)
for L in (224, 384):
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 32, L, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 32, L, 128, device="cuda", dtype=torch.bfloat16)
    mask = torch.zeros(1, 1, 1, L, device="cuda", dtype=torch.bfloat16)
    mask[..., 200:] = float("-inf")
    for name, kw in (("mask", dict(attn_mask=mask)), ("nomask", {})):
        ref = F.scaled_dot_product_attention(q, k, v, **kw)
        bad = sum(not torch.equal(F.scaled_dot_product_attention(q, k, v, **kw), ref) for _ in range(500))
        print(L, name, "mismatches of 500:", bad, flush=True)
    for b in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        try:
            with torch.nn.attention.sdpa_kernel(getattr(torch.nn.attention.SDPBackend, b)):
                ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                bad = sum(not torch.equal(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), ref)
                          for _ in range(300))
            print(L, b, "mismatches of 300:", bad, flush=True)
        except Exception as e:
            print(L, b, "n/a", type(e).__name__)
