# Session 69, call 2: the second round of call 1's A/B (base, then this tree), then session 68's call 7 (4096 x 12288
# at M = 1 on one machine: bench_ops from an empty cache, then diag_early's tiles alone and the tuned hlwq.linear).
AB_SHAPES="1024x4096" OUT=$OUT/round2 bash benchmarks/ab_trees.sh .diag/base 1
(cd $OUT && tar czf round2.tgz round2 && rm -rf round2)  # (one file back: a call returns eight at most)
bash benchmarks/results/h100_s68_call7_script.sh
