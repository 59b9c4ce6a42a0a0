# Session 67, call 1: the contiguous 40-bit Q5 layout prototype against the kernel as it is (outputs compared, then
# timed alternating, F.linear's path with the rotation in the kernel), then bench_ops at M = 1 on the same machine
# for bf16, torchao int4 and the tuned Q5 / Q4 (the ratios the prototype's times are read against).
# The tensor-core GEMV (same extraction) at M = 4 and 8 too.
cd benchmarks
python3 diag_contig5.py --shapes 14336x4096 4096x14336 12288x4096 4096x4096 --rounds 3 --tc-m 4 8
timeout 420 python3 bench_ops.py --m 1 --shapes 14336x4096 4096x14336 4096x4096 --json $OUT/s67_ops_m1.json --plot $OUT/s67_ops_m1.png
