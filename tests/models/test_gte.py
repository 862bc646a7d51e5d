"""Alibaba GTE: transformers' native `gte` classes (GteModel, GteForSequenceClassification) and
the remote-code `new` layout (NTK-scaled rotary, new.-prefixed reranker) against an independent
NumPy reference on fake checkpoints with exactly the published weight names.

Tolerance (float32): max abs error < 1e-5 on hidden states, pooled vectors and logits.
"""

import numpy as np
import pytest
import tiny_models as tm
from encoder_models import (fake_checkpoint, hf_model, loaded_params, random_weights, shapes_match_module,
                            texts_and_items, torch_outputs)
from numpy_reference import Weights, gte_new, pooler_classifier

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError
from tei_jax.models.layers import rotary_inv_freq


def test_native_gte_hidden_states_match_transformers():
    folder = hf_model("gte", type_vocab_size=2)
    tm.write_pooling(folder, "cls")
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=21)
    out, _ = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < 1e-5
    assert np.abs(model.embed(texts, normalize=False) - ref[:, 0]).max() < 1e-5
    for k in (0, 3):  # each input alone: no padding, no packing neighbours
        alone = model.engine.run_all(EMBED_ALL, [items[k]])[0]
        assert np.abs(alone - ref[k, : len(items[k])]).max() < 1e-5


def test_native_gte_classifier_matches_transformers():
    folder = hf_model("gte", "classification", num_labels=3, type_vocab_size=2)
    model = tm.load_cached(folder)
    assert model.kind == "classifier"
    rng = np.random.default_rng(22)
    pairs = list(zip(tm.random_texts(rng, 5, 1, 20), tm.random_texts(rng, 5, 1, 20)))
    items = [model.tokenizer.encode(a, pair=b, truncate=True) for a, b in pairs]
    out, _ = torch_outputs(folder, items, "classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < 1e-5


def new_config(architecture: str = "NewModel", **extra) -> dict:
    """A gte-*-en-v1.5 style remote-code config (tiny)."""
    config = dict(
        architectures=[architecture], model_type="new",
        auto_map={"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
                  "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"},
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=30528,
        hidden_act="gelu", layer_norm_eps=1e-12, layer_norm_type="layer_norm", max_position_embeddings=8192,
        position_embedding_type="rope", rope_theta=500000.0, rope_scaling={"factor": 2.0, "type": "ntk"},
        type_vocab_size=0, logn_attention_scale=False, logn_attention_clip1=False, pack_qkv=True,
        unpad_inputs=False, use_memory_efficient_attention=False, pad_token_id=0,
    )
    config.update(extra)
    return config


def published_shapes(c: dict, prefix: str = "") -> dict:
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = {"embeddings.word_embeddings.weight": (c["vocab_size"], h),
              "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,)}
    if c["type_vocab_size"]:
        shapes["embeddings.token_type_embeddings.weight"] = (c["type_vocab_size"], h)
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        shapes.update({
            p + "attention.qkv_proj.weight": (3 * h, h), p + "attention.qkv_proj.bias": (3 * h,),
            p + "attention.o_proj.weight": (h, h), p + "attention.o_proj.bias": (h,),
            p + "attn_ln.weight": (h,), p + "attn_ln.bias": (h,),
            p + "mlp.up_gate_proj.weight": (2 * i, h),
            p + "mlp.down_proj.weight": (h, i), p + "mlp.down_proj.bias": (h,),
            p + "mlp_ln.weight": (h,), p + "mlp_ln.bias": (h,),
        })
    return {prefix + name: shape for name, shape in shapes.items()}


def test_new_embeddings_match_numpy_reference():
    config = new_config()
    tensors = random_weights(published_shapes(config), seed=23)
    folder = fake_checkpoint("gte-new", config, tensors, pooling="cls")
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=24, n=6, max_words=40)
    refs = [gte_new(Weights(tensors), config, list(i.input_ids), list(i.type_ids)) for i in items]
    for hidden, ref in zip(model.engine.run_all(EMBED_ALL, items), refs):
        assert np.abs(hidden - ref).max() < 1e-5
    assert np.abs(model.embed(texts, normalize=False) - np.stack([r[0] for r in refs])).max() < 1e-5
    for k in (0, 3):
        assert np.abs(model.engine.run_all(EMBED_ALL, [items[k]])[0] - refs[k]).max() < 1e-5


@pytest.mark.parametrize("pooler", [True, False])
def test_new_reranker_matches_numpy_reference(pooler):
    """gte-multilingual-reranker-base layout: new.-prefixed encoder with token types, a tanh
    pooler, a root classifier. Without new.pooler.dense (TEI makes the pooler optional) the
    classifier reads the first token directly."""
    config = new_config("NewForSequenceClassification", type_vocab_size=1, rope_theta=160000.0,
                        rope_scaling={"factor": 8.0, "type": "ntk"}, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    shapes = published_shapes(config, prefix="new.")
    shapes.update({"classifier.weight": (1, 32), "classifier.bias": (1,)})
    if pooler:
        shapes.update({"new.pooler.dense.weight": (32, 32), "new.pooler.dense.bias": (32,)})
    tensors = random_weights(shapes, seed=25)
    folder = fake_checkpoint(f"gte-new-reranker-{pooler}", config, tensors, pooling=None)
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    assert ("pooler" in params["head"]) == pooler
    model = tm.load_cached(folder)
    assert model.kind == "reranker"
    query, docs = "how do rotary embeddings scale", tm.random_texts(np.random.default_rng(26), 4, 1, 30)
    items = [model.tokenizer.encode(query, pair=d, truncate=True) for d in docs]
    weights = Weights(tensors, prefix="new.")
    zeros = [[0] * len(i) for i in items]  # type_vocab_size 1: every token is type 0
    hidden = [gte_new(weights, config, list(i.input_ids), z) for i, z in zip(items, zeros)]
    if pooler:
        refs = np.stack([pooler_classifier(weights, h) for h in hidden])
    else:
        refs = np.stack([h[0] @ tensors["classifier.weight"].T + tensors["classifier.bias"] for h in hidden])
    assert np.abs(np.stack(model.engine.run_all(PREDICT, items)) - refs).max() < 1e-5
    assert np.abs(model.engine.run_all(PREDICT, items[:1])[0] - refs[0]).max() < 1e-5


@pytest.mark.parametrize("factor,mixed_b", [(2.0, None), (8.0, None), (4.0, 0.75)])
def test_ntk_frequencies(factor, mixed_b):
    """NTK scaling as the remote code computes it (fixed, and the mixed variant)."""
    dim, theta = 64, 160000.0
    exponents = np.arange(0, dim, 2) / dim
    if mixed_b is None:
        expected = 1.0 / (theta * factor) ** exponents / factor ** (2 / dim)
    else:
        a = np.log(factor) / (dim / 2) ** mixed_b
        expected = 1.0 / theta ** exponents / np.exp(a * np.arange(1, dim // 2 + 1) ** mixed_b)
    ours = np.asarray(rotary_inv_freq(dim, theta, "ntk", factor, mixed_b))
    assert np.allclose(ours, expected, rtol=2e-6, atol=0)


@pytest.mark.parametrize("field,value", [
    ("rope_scaling", {"type": "yarn", "factor": 2.0}),
    ("logn_attention_scale", True),
    ("position_embedding_type", "absolute"),
    ("hidden_act", "snake"),
])
def test_unsupported_config_names_the_field(field, value):
    folder = fake_checkpoint(f"gte-bad-{field}", {**new_config(), field: value}, {"unused": np.zeros(1, np.float32)})
    with pytest.raises(ModelLoadError, match=field):
        loaded_params(folder)
