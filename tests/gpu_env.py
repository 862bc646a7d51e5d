"""Where the GPU-marked tests run: on a CUDA GPU, or (TEI_JAX_GPU_TESTS_ON_CPU=1) on the CPU.

The GPU tests skip without a GPU. `bench/gpu_check.py --dry-run` sets TEI_JAX_GPU_TESTS_ON_CPU=1
so that the same tests run on the CPU backend (Pallas in interpret mode, torch on the CPU, smaller
shapes), and a typo in them shows up before a GPU minute is spent.
"""

from __future__ import annotations

import os

import jax
import pytest

ON_CPU = os.environ.get("TEI_JAX_GPU_TESTS_ON_CPU") == "1"
HAS_GPU = jax.default_backend() == "gpu"
RUNS = HAS_GPU or ON_CPU

needs_gpu = pytest.mark.skipif(not RUNS, reason="needs a GPU (jax.default_backend() != 'gpu'); "
                                                "TEI_JAX_GPU_TESTS_ON_CPU=1 runs it on the CPU")


def torch_device() -> str:
    """The torch device that shares the test's accelerator ("cuda"), else "cpu"."""
    import torch

    return "cuda" if HAS_GPU and torch.cuda.is_available() else "cpu"
