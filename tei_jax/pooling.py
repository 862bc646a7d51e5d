"""Pooling of hidden states into one vector per sequence, and the vector post-processing.

A batch row may hold several sequences (packing): token t of row r belongs to slot
segment_ids[r, t] (1..slots, 0 = padding). Every pooling returns [rows, slots, width], so
padded batches (one slot per row) and packed batches share one code path. Pooling runs in
float32 whatever the model dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _slot_masks(segment_ids: jax.Array, slots: int) -> jax.Array:
    """[rows, slots, seq] boolean: token belongs to slot s+1. Slots come before tokens so the
    pooling matmul is a plain [slots, seq] x [seq, d] product per row, which XLA's CPU
    backend hands to its fast matmul (contracting the first axis instead ran ~3x slower)."""
    return jnp.arange(1, slots + 1, dtype=segment_ids.dtype)[:, None] == segment_ids[:, None, :]


def _gather_tokens(hidden: jax.Array, index: jax.Array) -> jax.Array:
    """hidden [rows, seq, d], index [rows, slots] -> [rows, slots, d]."""
    return jnp.take_along_axis(hidden, index[:, :, None], axis=1)


def _segment_max(values: jax.Array, segment_ids: jax.Array, slots: int) -> jax.Array:
    """Max over each slot's tokens -> [rows, slots, d]; max is order-free, so deterministic."""
    rows, seq, width = values.shape
    flat = jnp.where(segment_ids > 0, jnp.arange(rows)[:, None] * slots + segment_ids - 1, rows * slots)
    out = jax.ops.segment_max(values.reshape(rows * seq, width), flat.reshape(-1), num_segments=rows * slots + 1)
    out = out[: rows * slots].reshape(rows, slots, width)
    return jnp.where(jnp.isfinite(out), out, 0.0)  # empty slots


def pool(hidden: jax.Array, segment_ids: jax.Array, slots: int, mode: str) -> jax.Array:
    """Pool hidden states [rows, seq, d] per slot with `mode` -> float32 [rows, slots, d]."""
    masks = _slot_masks(segment_ids, slots)
    hidden32 = hidden.astype(jnp.float32)
    if mode == "cls":
        return _gather_tokens(hidden32, jnp.argmax(masks, axis=2))
    if mode == "last_token":
        seq = masks.shape[2]
        return _gather_tokens(hidden32, seq - 1 - jnp.argmax(masks[:, :, ::-1], axis=2))
    if mode in ("max", "splade"):
        values = jnp.log1p(jax.nn.relu(hidden32)) if mode == "splade" else hidden32
        return _segment_max(values, segment_ids, slots)
    weights = masks.astype(jnp.float32)
    if mode == "weightedmean":  # sentence-transformers: weight = 1-based position in the sequence
        weights = weights * jnp.cumsum(weights, axis=2)
    sums = jnp.einsum("rsl,rld->rsd", weights, hidden32)
    totals = jnp.maximum(jnp.sum(weights, axis=2), 1e-9)[:, :, None]
    if mode == "mean_sqrt_len":
        return sums / jnp.sqrt(totals)
    if mode in ("mean", "weightedmean"):
        return sums / totals
    raise ValueError(f"unknown pooling mode {mode!r}")


def truncate_and_normalize(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka truncation, then L2 normalisation (TEI's order)."""
    if dimensions is not None:
        vectors = vectors[..., :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def sparse_entries(vector: np.ndarray) -> list[dict]:
    """Non-zero entries of a SPLADE vector as TEI's [{index, value}] in ascending index order."""
    (indices,) = np.nonzero(vector)
    return [{"index": int(i), "value": float(vector[i])} for i in indices]


def scores_from_logits(logits: np.ndarray, raw_scores: bool) -> np.ndarray:
    """TEI's scores: raw logits, or sigmoid for one label and softmax for several."""
    logits = np.asarray(logits, dtype=np.float32)
    if raw_scores:
        return logits
    if logits.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)
