# Session 69, call 2: the Llama-3-8B-shaped decode step at batch 1 (profile_step.py, GraphDecoder's captured step)
# with the gated down projection (this tree) against the tree before it (.diag/base, commit beb728e), alternating,
# two rounds (ab_trees.sh; its M = 1 ops on 1024 x 4096 only, which the change does not touch).
AB_SHAPES="1024x4096" bash benchmarks/ab_trees.sh .diag/base 2
