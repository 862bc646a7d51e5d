"""pplx (`bidirectional_pplx_qwen3`) against transformers' Qwen3Model, bidirectional.

Tolerances (float32): hidden states max abs error < 1e-5 against Qwen3Model with a
padding-only mask (right-padded batch and each input alone); pooled vectors are
round(127 * tanh(mean)) of the reference, equal except where the reference sits within 1e-3
of a rounding edge (there, at most one level apart).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import test_decoders as dec
import tiny_models as tm

from tei_jax.config import load_spec
from tei_jax.engine import EMBED_ALL
from tei_jax.errors import ModelLoadError
from tei_jax.models import family_for, pplx

TOL = 1e-5


def make_pplx():
    """The tiny bidirectional Qwen3, saved under pplx's model_type with mean pooling."""
    base = dec.make_decoder("qwen3", tag="bidirectional", use_bidirectional_attention=True)
    folder = tm.ROOT / "pplx-qwen3"
    def build(into) -> None:
        shutil.copytree(base, into, dirs_exist_ok=True)
        config = json.loads((into / "config.json").read_text())
        (into / "config.json").write_text(json.dumps({**config, "model_type": "bidirectional_pplx_qwen3",
                                                        "architectures": ["PPLXQwen3Model"]}))
        tm.write_pooling(into, "mean")
    tm.build_once(folder, build)
    return base, folder


def _levels(raw: np.ndarray) -> np.ndarray:
    return np.round(np.tanh(raw) * 127.0)


def test_pplx_matches_bidirectional_qwen3_and_pools_to_int8_levels():
    base, folder = make_pplx()
    model = tm.load_cached(folder)
    assert family_for(model.spec) is pplx and not model.engine.arch.config.causal
    texts = dec._texts(seed=71)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, mask = dec.reference(base, items, bidirectional=True)
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < TOL
    mean = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected, edge = _levels(mean), np.abs(np.abs(np.tanh(mean) * 127.0 % 1.0) - 0.5) < 1e-3
    for pooled in (model.embed(texts, normalize=False),
                   np.concatenate([model.embed(t, normalize=False) for t in texts])):
        assert np.array_equal(pooled, np.round(pooled)) and np.abs(pooled).max() <= 127
        assert np.array_equal(pooled[~edge], expected[~edge])
        assert np.abs(pooled - expected).max() <= 1
    normalized = model.embed(texts[:2])
    assert np.allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("change,match", [
    ({"kind": "reranker", "id2label": {0: "score"}}, "embeddings only"),
    ({"pooling": "last_token"}, "mean only"),
])
def test_pplx_refuses_what_tei_refuses(change, match):
    _, folder = make_pplx()
    spec = dataclasses.replace(load_spec(folder), **change)
    with pytest.raises(ModelLoadError, match=match):
        pplx.build(spec, jnp.float32, "xla")
