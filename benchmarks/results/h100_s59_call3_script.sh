#!/usr/bin/env bash
# Session 59, call 3: after the review (the shared pool taken out, the prompt's graph opt-in, Qwen3.5's cache flags
# put back after each prompt replay): the GPU tests of tests/test_transformers.py, then OPT with prompt_graph=True
# in a process of its own (its capture is expected to fail with GraphDecoder's message). From the root:
#   bash benchmarks/gpu_run.sh bash benchmarks/results/h100_s59_call3_script.sh
cd "$(dirname "$0")/../.." || exit 1
OMP_NUM_THREADS=2 timeout -s INT 240 python3 -m pytest -m gpu -n 8 tests/test_transformers.py tests/test_grouping.py \
  -p no:cacheprovider --tb=short -rfE -q > "$OUT/gpu_tests.log" 2>&1
echo "tests rc $? at ${SECONDS}s"; grep -E "FAILED|ERROR|passed|failed" "$OUT/gpu_tests.log" | tail -12
timeout 90 python3 - <<'PY' 2>&1 | grep -v Warning | tail -4
import torch, sys
sys.path.insert(0, ".")
from tests.test_transformers import _opt, _q5
from hlwq_ops.decode import GraphDecoder
model = _q5(_opt, "cuda", torch.bfloat16)
ids = torch.randint(3, 512, (2, 6), device="cuda")
print("OPT, prompt eager:", GraphDecoder(model, compile=False).generate(ids, 4).shape)
try:
    GraphDecoder(model, compile=False, prompt_graph=True).generate(ids, 4)
    print("OPT, prompt_graph=True: captured")
except RuntimeError as e:
    print("OPT, prompt_graph=True:", str(e)[:160].replace("\n", " "), "...", str(e)[-170:].replace("\n", " "))
PY
