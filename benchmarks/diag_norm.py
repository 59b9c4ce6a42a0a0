"""What the residual add and RMSNorm cost inside the group's GEMV, alone (M = 1, one GPU).

In the Llama-3-8B-shaped decode step (``benchmarks/RESULTS.md`` 72) the norm in the q-k-v and gate-up GEMVs'
prologue (``hlwq.linear_group_norm``, session 70) lengthened them by about 2 us each, nearly what the separate norm
kernel took. Three ways of one layer's group are timed here, each like ``bench_ops.py`` (one CUDA graph over copies
of the group's weights spanning the L2 several times), side by side in alternating rounds:

- ``group``: ``hlwq.linear_group`` on the normed activations (what the GEMV costs without the norm);
- ``norm+group``: Inductor's kernel for the add and the norm (compiled, as the step compiled it before), then
  ``hlwq.linear_group``;
- ``group_norm``: ``hlwq.linear_group_norm``, the add and the norm in the GEMV's prologue.

``group_norm - group`` is what the prologue adds to the GEMV, against ``norm+group - group``, the kernel it replaces
(with its launch). Both outputs are checked against each other. From the repository's root::

    python benchmarks/diag_norm.py --json diag_norm.json
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_ops import captured, interleaved_times, n_copies, rel_error

from hlwq_ops import kernels

GROUPS = {  # a Llama-3-8B layer's groups: weights' (N, K)
    "q-k-v": [(4096, 4096), (1024, 4096), (1024, 4096)],
    "gate-up": [(14336, 4096), (14336, 4096)],
}
EPS = 1e-5


def _group(shapes: list[tuple[int, int]], bits: int, l2_bytes: int) -> list[tuple[list, list]]:
    """The group's packed weights (random N(0, 0.02)) and copies of them past the L2: [(qdata list, scale list)]."""
    packed = [torch.ops.hlwq.quantize(0.02 * torch.randn(n, k, device="cuda"), bits, 128) for n, k in shapes]
    total = sum(q.nbytes + s.nbytes for q, s in packed)
    copies = [([q for q, _ in packed], [s for _, s in packed])]
    for _ in range(n_copies(total, l2_bytes) - 1):
        copies.append(([q.clone() for q, _ in packed], [s.clone() for _, s in packed]))
    return copies


def run(name: str, bits: int, rounds: int, l2_bytes: int) -> dict:
    shapes = GROUPS[name]
    K = shapes[0][1]
    copies = _group(shapes, bits, l2_bytes)
    x, residual = (torch.randn(1, K, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(K, device="cuda")).bfloat16()
    nones = [None] * len(shapes)
    norm = torch.compile(kernels.add_rms_norm, fullgraph=True)  # (Llama's form: Inductor's kernel, as in the step)
    normed, _ = norm(x, residual, weight, EPS)

    def group(q, s):
        return lambda: torch.ops.hlwq.linear_group(normed, q, s, nones, bits, 128, K, nones)

    def norm_group(q, s):
        return lambda: torch.ops.hlwq.linear_group(norm(x, residual, weight, EPS)[0], q, s, nones, bits, 128, K, nones)

    def group_norm(q, s):
        return lambda: torch.ops.hlwq.linear_group_norm(x, residual, weight, EPS, q, s, nones, bits, 128, K, nones)

    ways = {"group": group, "norm+group": norm_group, "group_norm": group_norm}
    q0, s0 = copies[0]
    fused, h = ways["group_norm"](q0, s0)()
    apart = ways["norm+group"](q0, s0)()
    error = rel_error(fused, apart)
    h_ok = torch.equal(h, x + residual)
    graphs = [captured([make(q, s) for q, s in copies]) for make in ways.values()]
    times = interleaved_times(graphs, len(copies), rounds)
    best = {way: min(t) for way, t in zip(ways, times)}
    return dict(group=name, bits=bits, copies=len(copies), us=best, rounds=dict(zip(ways, times)),
                prologue_us=best["group_norm"] - best["group"], kernel_us=best["norm+group"] - best["group"],
                rel_error_fused_vs_apart=error, sum_exact=h_ok)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    p.add_argument("--bits", type=int, nargs="+", default=[5])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    a = p.parse_args()
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, torch {torch.__version__}", flush=True)
    rows = []
    for bits in a.bits:
        for name in a.groups:
            row = run(name, bits, a.rounds, props.L2_cache_size)
            rows.append(row)
            us = "  ".join(f"{way} {t:.2f}" for way, t in row["us"].items())
            print(f"Q{bits} {name:>7}: {us} us; the prologue +{row['prologue_us']:.2f}, the norm's kernel "
                  f"+{row['kernel_us']:.2f}; fused vs apart rel. error {row['rel_error_fused_vs_apart']:.1e}, "
                  f"sum exact {row['sum_exact']}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
