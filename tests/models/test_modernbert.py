"""ModernBERT against transformers' ModernBertModel / ForSequenceClassification (cls and mean
pooling) / ForMaskedLM (SPLADE), with a local window (8 tokens) shorter than the inputs so that
global and local layers, and their two rotary bases, really differ.

Tolerance (float32): max abs error < 1e-5 on hidden states, pooled vectors, logits and SPLADE.
"""

import numpy as np
import pytest
import tiny_models as tm
from encoder_models import hf_model, loaded_params, shapes_match_module, texts_and_items, torch_outputs

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError

WINDOWED = dict(num_hidden_layers=3, global_attn_every_n_layers=2, local_attention=8,
                global_rope_theta=20000.0, local_rope_theta=500.0, norm_bias=True)


def test_hidden_states_match_transformers():
    folder = hf_model("modernbert", **WINDOWED)
    tm.write_pooling(folder, "mean")
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    assert arch.config.local_layers == (1,) and arch.config.local_window == 4
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=41, n=6, max_words=40)
    out, mask = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < 1e-5
    pooled_ref = (ref * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    pooled = model.embed(texts, normalize=False)
    assert np.abs(pooled - pooled_ref).max() < 1e-5
    alone = np.concatenate([model.embed(t, normalize=False) for t in texts[:3]])
    assert np.abs(alone - pooled[:3]).max() < 1e-5


@pytest.mark.parametrize("pooling,num_labels", [("cls", 1), ("mean", 3)])
def test_classifier_matches_transformers(pooling, num_labels):
    folder = hf_model("modernbert", "classification", num_labels=num_labels, classifier_pooling=pooling,
                      classifier_bias=True, **WINDOWED)
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    assert model.engine.arch.classifier_pooling == pooling
    _, items = texts_and_items(model, seed=42, n=5, max_words=40)
    out, _ = torch_outputs(folder, items, "classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < 1e-5


def test_splade_matches_masked_lm():
    folder = hf_model("modernbert", "masked_lm", **WINDOWED)
    arch, params, unused = loaded_params(folder, pooling="splade")
    assert unused == []
    model = tm.load_cached(folder, pooling="splade")
    texts, items = texts_and_items(model, seed=43, n=4)
    out, mask = torch_outputs(folder, items, "masked_lm")
    ref = np.max(np.log1p(np.maximum(out.logits.numpy(), 0)) * mask[:, :, None], axis=1)
    assert np.abs(model.embed(texts, normalize=False) - ref).max() < 1e-5


def _copy_with_config(folder, tmp_path, edit):
    import json
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_hub_config_spelling_gives_the_same_architecture(tmp_path):
    """transformers 5 writes layer_types and rope_parameters; hub configs carry
    global_attn_every_n_layers and global/local_rope_theta. Both must describe the same stack."""
    folder = hf_model("modernbert", **WINDOWED)

    def hub_spelling(config):
        assert config.pop("layer_types") == ["full_attention", "sliding_attention", "full_attention"]
        config.pop("rope_parameters")
        config.update(global_attn_every_n_layers=2, global_rope_theta=20000.0, local_rope_theta=500.0)

    native, _, _ = loaded_params(folder)
    hub, _, _ = loaded_params(_copy_with_config(folder, tmp_path, hub_spelling))
    assert hub.encoder.spec == native.encoder.spec and hub.config == native.config
    assert (native.config.rope_theta, native.config.local_rope_theta) == (20000.0, 500.0)


@pytest.mark.parametrize("field,value", [("rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
                                         ("hidden_activation", "snake"), ("classifier_pooling", "max")])
def test_unsupported_config_names_the_field(field, value, tmp_path):
    def spoil(config):
        config[field] = value
        if field == "rope_scaling":
            config.pop("rope_parameters", None)

    with pytest.raises(ModelLoadError, match=field):
        loaded_params(_copy_with_config(hf_model("modernbert", **WINDOWED), tmp_path, spoil))
