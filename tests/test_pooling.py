"""pooling.pool on packed rows against a per-sequence numpy reference, every mode."""

import numpy as np
import pytest

from tei_jax.pooling import pool

SLOTS = 4
# Two rows of 12 tokens: row 0 packs three sequences (lengths 5, 3, 2) and two pads; row 1
# holds one sequence of 7 and padding. Slots a row does not use stay empty.
SEGMENTS = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0],
                     [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], np.int32)


def _reference(tokens: np.ndarray, mode: str) -> np.ndarray:
    """One sequence's tokens [n, d] pooled as sentence-transformers does."""
    n = len(tokens)
    if mode == "cls":
        return tokens[0]
    if mode == "last_token":
        return tokens[-1]
    if mode == "max":
        return tokens.max(0)
    if mode == "splade":
        return np.log1p(np.maximum(tokens, 0.0)).max(0)
    if mode == "mean":
        return tokens.mean(0)
    if mode == "mean_sqrt_len":
        return tokens.sum(0) / np.sqrt(n)
    weights = np.arange(1, n + 1, dtype=np.float64)[:, None]  # weightedmean: 1-based positions
    return (tokens * weights).sum(0) / weights.sum()


@pytest.mark.parametrize("mode", ["cls", "last_token", "max", "splade", "mean", "mean_sqrt_len", "weightedmean"])
def test_every_mode_pools_each_packed_sequence_alone(mode):
    hidden = np.random.default_rng(0).standard_normal((2, 12, 8)).astype(np.float32)
    out = np.asarray(pool(hidden, SEGMENTS, SLOTS, mode))
    assert out.shape == (2, SLOTS, 8) and out.dtype == np.float32
    for row in range(2):
        for slot in range(SLOTS):
            tokens = hidden[row][SEGMENTS[row] == slot + 1].astype(np.float64)
            if len(tokens):
                np.testing.assert_allclose(out[row, slot], _reference(tokens, mode), atol=1e-6, rtol=1e-6)
            elif mode in ("mean", "mean_sqrt_len", "weightedmean", "max", "splade"):
                assert np.all(out[row, slot] == 0.0)  # an empty slot is zeros, never NaN
