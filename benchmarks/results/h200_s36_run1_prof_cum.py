"""cProfile of 300 eager F.linear calls on a Q5 HLWQTensor, by cumulative and own time (session 36 run 1)."""
import cProfile, pstats, sys, torch, torch.nn.functional as F
import hlwq_ops
N, K = 14336, 4096
w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02
q = hlwq_ops.HLWQTensor.from_hp(w, 5)
with torch.no_grad():
    for M in map(int, sys.argv[1:]):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        for _ in range(20):
            F.linear(x, q)
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            F.linear(x, q)
        prof.disable()
        torch.cuda.synchronize()
        print(f"\n===== M = {M}: cumulative", flush=True)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        print(f"\n===== M = {M}: own time", flush=True)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
