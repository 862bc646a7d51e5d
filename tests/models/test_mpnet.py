"""MPNet against transformers' MPNetModel and MPNetForSequenceClassification: learned positions
counted from padding_idx + 1, and the bucketed relative-position bias shared by all layers.

Tolerance (float32): max abs error < 1e-5 on hidden states, pooled vectors and logits.
"""

import numpy as np
import pytest
import tiny_models as tm
from encoder_models import fake_checkpoint, hf_model, loaded_params, shapes_match_module, texts_and_items, torch_outputs

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError
from tei_jax.models.layers import relative_position_buckets


def test_hidden_states_match_transformers():
    folder = hf_model("mpnet")
    tm.write_pooling(folder, "mean")
    arch, params, unused = loaded_params(folder)
    assert unused == ["pooler.dense.bias", "pooler.dense.weight"]  # MPNetModel's pooler: not used by TEI
    assert shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=51, n=6, max_words=40)
    out, mask = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < 1e-5
    pooled_ref = (ref * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    pooled = model.embed(texts, normalize=False)
    assert np.abs(pooled - pooled_ref).max() < 1e-5
    alone = np.concatenate([model.embed(t, normalize=False) for t in texts[:3]])
    assert np.abs(alone - pooled[:3]).max() < 1e-5


@pytest.mark.parametrize("num_labels", [1, 3])
def test_classifier_matches_transformers(num_labels):
    folder = hf_model("mpnet", "classification", num_labels=num_labels)
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    _, items = texts_and_items(model, seed=52, n=5)
    out, _ = torch_outputs(folder, items, "classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < 1e-5


@pytest.mark.parametrize("length", [1, 9, 130, 515])
def test_relative_buckets_match_transformers(length):
    import torch
    import transformers

    encoder = transformers.models.mpnet.modeling_mpnet.MPNetEncoder(
        transformers.MPNetConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, intermediate_size=8))
    position = torch.arange(length)
    expected = encoder.relative_position_bucket(position[None, :] - position[:, None], num_buckets=32, max_distance=128)
    assert (relative_position_buckets(length, 32, 128) == expected.numpy()).all()


@pytest.mark.parametrize("field,value", [("hidden_act", "snake"), ("architectures", ["MPNetForMaskedLM"])])
def test_unsupported_config_names_the_field(field, value):
    """An unknown activation, or SPLADE on MPNet (no masked-LM head here), fails at load."""
    import json

    config = {**json.loads((hf_model("mpnet") / "config.json").read_text()), field: value}
    folder = fake_checkpoint(f"mpnet-bad-{field}", config, {"unused": np.zeros(1, np.float32)})
    with pytest.raises(ModelLoadError, match=field):
        loaded_params(folder, pooling="splade" if field == "architectures" else None)
