# Session 66, call 3 (call 2's machine): the arrival without its CTA barrier, beside the kernel and no_epilogue.
cd benchmarks && python3 diag_variants.py --shapes 14336x4096 4096x14336 --bits 5 --variants base no_barrier no_epilogue
