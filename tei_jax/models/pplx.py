"""Perplexity's pplx embedders (`bidirectional_pplx_qwen3`): Qwen3 layers attending both ways.

As TEI's Pplx1 reads them: the Qwen3 stack and weight names of decoder.py (with or without a
`model.` prefix), mean pooling only, embeddings only, and every pooled vector mapped to int8
levels, round(127 * tanh(x)), before any normalisation (the model is trained for int8
storage; ask with `normalize: false` to keep the levels).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ..config import ModelSpec
from ..errors import ModelLoadError
from . import decoder
from .architecture import Architecture

MODEL_TYPES = ("bidirectional_pplx_qwen3",)
INT8_SCALE = 127.0


def int8_levels(pooled):
    """round(127 * tanh(pooled)): integers in [-127, 127], as float32."""
    return jnp.round(jnp.tanh(pooled.astype(jnp.float32)) * INT8_SCALE)


def build(spec: ModelSpec, dtype, attention: str) -> Architecture:
    if spec.kind != "embedding":
        raise ModelLoadError(f"config.json: field 'architectures' = {spec.architectures!r}: "
                             "bidirectional_pplx_qwen3 serves embeddings only (as TEI)")
    if spec.pooling != "mean":
        raise ModelLoadError(f"pooling {spec.pooling!r} is not supported for bidirectional_pplx_qwen3 "
                             "(mean only, as TEI)")
    return dataclasses.replace(decoder.build(spec, dtype, attention), pooled_transform=int8_levels)
