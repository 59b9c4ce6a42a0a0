"""Session 43, on the CPU: does a process with HLWQ_COMPILED_GEMV=1 get a graph that a process without it left in
torch's disk caches? Four processes on one TORCHINDUCTOR_CACHE_DIR (flag 0, 1, 1, 0) each compile one quantized
layer and print the cache tag and AOTAutograd's cache counters; ``--untagged`` clears the tag the flag sets, as the
library was before session 43.

    PYTHONPATH=<tree> python cpu_s43_cache_key.py [--untagged]
"""
import json
import os
import subprocess
import sys
import tempfile

import torch

CHILD = """
import json, sys
import torch
from torch._dynamo.utils import counters
from torchao.quantization import quantize_
from hlwq_ops import HLWQConfig
if sys.argv[1] == "untagged":
    torch.compiler.config.cache_key_tag = ""
layer = torch.nn.Linear(256, 64, bias=False)
quantize_(layer, HLWQConfig(bits=5))
with torch.no_grad():
    torch.compile(layer)(torch.randn(1, 256))
print(json.dumps([torch.compiler.config.cache_key_tag, dict(counters["aot_autograd"])]))
"""

mode = "untagged" if "--untagged" in sys.argv else "tagged"
print(torch.__version__, mode, flush=True)
cache = tempfile.mkdtemp()
for flag in "0110":
    env = dict(os.environ, HLWQ_COMPILED_GEMV=flag, TORCHINDUCTOR_CACHE_DIR=cache)
    done = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True)
    tag, counted = json.loads(done.stdout.splitlines()[-1])
    hit = "hit" if counted.get("autograd_cache_hit") else "miss"
    print(f"HLWQ_COMPILED_GEMV={flag}: tag {tag!r}, AOTAutograd cache {hit} {counted}", flush=True)
