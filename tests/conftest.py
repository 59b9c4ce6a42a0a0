"""Shared test setup.

Without a GPU, Triton kernels run in the interpreter on CPU tensors: the
variable must be set before triton is first imported.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ._utils import HAS_CUDA  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_plans():
    """Kernel wrappers keep each call signature's launch (hlwq_ops.kernels.launch.plan_cache); a test that swaps a
    kernel for a stand-in must not find one planned with another."""
    from hlwq_ops.kernels.launch import clear_plans

    clear_plans()
    yield
    clear_plans()
