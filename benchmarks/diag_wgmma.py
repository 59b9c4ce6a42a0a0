"""The wgmma kernel against its stand-alone prototype (benchmarks/wgmma_prototype.py), same inputs, same run.

    python benchmarks/diag_wgmma.py     # on the GPU, from the repository root

Session 4 measured the prototype 34-36 us and the library kernel 48-53 us on
14336 x 4096 with the same configs (results/h100_s4_wgmma_vs_prototype.log);
session 5 found the cause (offsets whose alignment Triton could not see,
NOTES.md) and `diag_paths.py --baseline-dir` now makes the comparison. Also
times the FWHT kernel writing the permuted order.
"""
import sys

sys.path.insert(0, "benchmarks")
import torch, triton
from hlwq_ops.format import quantize_ref
from hlwq_ops import kernels
from hlwq_ops.kernels.wgmma import wgmma, permute_activations
from hlwq_ops.kernels.fwht import fwht
from bench_ops import graph_time, n_copies
import wgmma_prototype as rs

N, K = 14336, 4096
qdata, scale = quantize_ref(torch.randn(N, K, device="cuda") * 0.02, 5, 128)
nbytes = qdata.numel() + 2 * scale.numel()
copies = [(qdata, scale)] + [(qdata.clone(), scale.clone()) for _ in range(n_copies(nbytes, 50 << 20) - 1)]
for M in (2, 16):
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    xp = fwht(x, 128, torch.bfloat16, per_word=8)
    out = torch.zeros(M, N, device="cuda")
    for split, ns in ((4, 3), (2, 3), (8, 3), (4, 4), (1, 3)):
        cfg = dict(BM=16, BN=64, SPLIT_K=split, num_warps=4, num_stages=ns)
        t_prod, _ = graph_time([lambda q=q, s=s: wgmma(xp, q, s, None, 5, 128, torch.bfloat16, cfg) for q, s in copies], replays=10)
        pc = dict(BM=16, BN=64, SPLIT=split, num_warps=4, num_stages=ns)
        def proto(q, s):
            rs.k[(triton.cdiv(N, 64), split)](xp, q.view(torch.int32), s, out, M, N, K, q.shape[1] // 4, s.shape[1],
                  BM=16, BN=64, B=128, CB_ASM=rs.cb_asm(), SPLIT=split, num_warps=4, num_stages=ns)
        t_proto, _ = graph_time([lambda q=q, s=s: proto(q, s) for q, s in copies], replays=10)
        print(f"M={M} split={split} stages={ns}: production {t_prod:.2f} us, prototype {t_proto:.2f} us", flush=True)
    t_fwht, _ = graph_time([lambda: fwht(x, 128, torch.bfloat16, per_word=8)] * 8, replays=10)
    t_fwht0, _ = graph_time([lambda: fwht(x, 128, torch.bfloat16)] * 8, replays=10)
    t_lin, _ = graph_time([lambda q=q, s=s: kernels.linear(x, q, s, None, 5, 128, K, None) for q, s in copies], replays=10)
    print(f"M={M} fwht permuted {t_fwht:.2f} plain {t_fwht0:.2f}; kernels.linear {t_lin:.2f} us", flush=True)
    from hlwq_ops.kernels import tuning
    print({k: v for k, v in tuning._TUNED.items() if "wgmma" in k}, flush=True)
