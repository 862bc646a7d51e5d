"""Llama (causal and bidirectional) and the decoders' rotary scalings against transformers.

Tolerances (float32): hidden states, last-token vectors and classifier logits max abs error
< 1e-5 against transformers' LlamaModel / LlamaForSequenceClassification on tiny random
models (grouped-query attention, biases on q/k/v/o and the MLP, head_dim != hidden/heads),
right-padded and one input at a time. The rotary scalings are given short original contexts
(16 positions) so that inputs of up to 30 tokens reach the scaled frequencies.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import test_decoders as dec
import tiny_models as tm

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.models import rope

TOL = 1e-5
SCALINGS = {
    "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16},
}


def test_llama_causal_with_llama3_rotary_matches_transformers():
    folder = dec.make_decoder("llama", tag="llama3", rope_parameters=SCALINGS["llama3"])
    model = tm.load_cached(folder)
    cfg = model.engine.arch.config
    assert cfg.causal and cfg.rope_scaling.kind is rope.RopeType.LLAMA3 and cfg.mlp_bias
    dec._check_embeddings(model, folder, dec._texts(seed=61))


@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_rotary_scalings_match_transformers(kind):
    folder = dec.make_decoder("llama", tag=kind, rope_parameters=SCALINGS[kind])
    model = tm.load_cached(folder)
    texts = tm.random_texts(np.random.default_rng(62), 4, 12, 30)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, _ = dec.reference(folder, items)
    ours = model.engine.run_all(EMBED_ALL, items)
    assert max(np.abs(h - ref[k, : len(items[k])]).max() for k, h in enumerate(ours)) < TOL


def test_scalings_change_the_frequencies_they_should():
    """Guards the parity tests against scalings that are silently plain rotary."""
    plain = rope.RopeScalingSpec(rope.RopeType.DEFAULT).inv_freq(16, 10000.0)
    for kind in ("linear", "yarn", "llama3"):
        _, spec = rope.parse({"rope_parameters": SCALINGS[kind], "max_position_embeddings": 128})
        assert np.abs(spec.inv_freq(16, 10000.0) - plain).max() > 1e-3, kind
    _, yarn = rope.parse({"rope_parameters": SCALINGS["yarn"], "max_position_embeddings": 128})
    assert yarn.attention_factor == pytest.approx(0.1 * np.log(4.0) + 1.0)
    _, dynamic = rope.parse({"rope_parameters": SCALINGS["dynamic"], "max_position_embeddings": 128}, 128)
    assert np.array_equal(dynamic.inv_freq(16, 10000.0), plain)  # within max_position_embeddings


def test_legacy_rope_scaling_field_is_read():
    """Hub configs written before transformers 5: rope_theta + rope_scaling with `type`."""
    theta, spec = rope.parse({"rope_theta": 500000.0, "rope_scaling": {
        "type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}})
    assert theta == 500000.0 and spec.kind is rope.RopeType.LLAMA3 and spec.factor == 32.0


def test_dynamic_beyond_max_positions_is_refused():
    from tei_jax.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="dynamic"):
        rope.parse({"rope_parameters": SCALINGS["dynamic"], "max_position_embeddings": 64}, 128)


def test_llama_bidirec_runs_bidirectionally():
    """`llama_bidirec` (NVIDIA's Nemotron Llama embedders, TEI's alias of Llama): the reference
    is transformers' LlamaModel with config.is_causal = false (a padding-only mask)."""
    base = dec.make_decoder("llama", tag="bidirectional-ref", is_causal=False)
    folder = tm.ROOT / "decoder-llama-bidirec"
    def build(into) -> None:
        shutil.copytree(base, into, dirs_exist_ok=True)
        config = json.loads((into / "config.json").read_text())
        config.pop("is_causal", None)
        (into / "config.json").write_text(json.dumps({**config, "model_type": "llama_bidirec",
                                                        "architectures": ["LlamaBidirectionalModel"]}))
    tm.build_once(folder, build)
    model = tm.load_cached(folder)
    assert not model.engine.arch.config.causal
    texts = dec._texts(seed=63)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, mask = dec.reference(base, items)
    causal = tm.load_cached(dec.make_decoder("llama", tag="bidirectional-ref-causal"))
    assert np.abs(causal.embed(texts[0], normalize=False)[0] - ref[0, len(items[0]) - 1]).max() > 1e-3
    ours = model.engine.run_all(EMBED_ALL, items)
    assert max(np.abs(h - ref[k, : len(items[k])]).max() for k, h in enumerate(ours)) < TOL
    assert np.abs(model.embed(texts, normalize=False) - dec._last_tokens(ref, mask)).max() < TOL


def test_llama_sequence_classification_scores_the_last_token():
    folder = dec.make_decoder("llama", "classification", 1)
    model = tm.load_cached(folder)
    assert model.kind == "reranker"
    texts = dec._texts(seed=64)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    ref, _ = dec.reference(folder, items, head="classification")
    assert np.abs(np.stack(model.engine.run_all(PREDICT, items)) - ref).max() < TOL
