"""Lowering the Pallas kernel for CUDA on a machine without a GPU.

JAX >= 0.11 asks Pallas' Triton lowering for the GPU's compute capability and finds none here;
an abstract device named like a real GPU answers it (JAX 0.10 accepts the same). On a GPU the
real device is used as is.
"""

from __future__ import annotations

import contextlib

import jax

DEVICE_KINDS = {80: "NVIDIA A100", 90: "NVIDIA H200"}  # compute capability -> a GPU of it


def lowering_target(compute_capability: int = 90):
    """A context in which `.lower(lowering_platforms=("cuda",))` works without a GPU."""
    if jax.default_backend() == "gpu":
        return contextlib.nullcontext()
    device = jax.sharding.AbstractDevice(DEVICE_KINDS[compute_capability], None, "gpu")
    return jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",), abstract_device=device))
