#!/usr/bin/env bash
# On the GPU machine: install the carried wheels, print the environment, then run "$@".
# .whl/ (git-ignored, carried) holds torchao 0.18 (DESIGN.md section 4); tests/test_tensor.py also needs
# expecttest there (torch's TestCase imports it), which the machine does not have, and pytest-xdist (with
# execnet) runs the GPU tests in parallel workers (`pytest -m gpu -n 4 tests`: 205 s instead of more than 390,
# compiling in parallel). To fill it:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl torchao==0.18.0 expecttest pytest-xdist execnet
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HLWQ_CACHE_DIR=/tmp/hlwq_cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.used --format=csv,noheader
python3 -c "import torch, triton, transformers, torchao; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'torchao', torchao.__version__)" 2>&1 | tail -1
"$@"
