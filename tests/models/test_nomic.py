"""NomicBERT: transformers' native NomicBertModel, and nomic's remote-code configs (v1.5 SwiGLU
without biases; v2-moe with biases, GELU MLPs and a mixture of experts on odd layers) against an
independent NumPy reference on fake checkpoints with exactly the published weight names.

Tolerance (float32): max abs error < 1e-5 on hidden states and pooled vectors.
"""

import numpy as np
import pytest
import tiny_models as tm
from encoder_models import (fake_checkpoint, hf_model, loaded_params, random_weights, shapes_match_module,
                            texts_and_items, torch_outputs)
from numpy_reference import Weights, nomic

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError


def test_native_hidden_states_match_transformers():
    folder = hf_model("nomic_bert")
    tm.write_pooling(folder, "mean")
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=31)
    out, mask = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < 1e-5
    pooled_ref = (ref * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(model.embed(texts, normalize=False) - pooled_ref).max() < 1e-5
    for k in (0, 3):  # each input alone: no padding, no packing neighbours
        alone = model.engine.run_all(EMBED_ALL, [items[k]])[0]
        assert np.abs(alone - ref[k, : len(items[k])]).max() < 1e-5


@pytest.mark.parametrize("num_labels", [1, 3])
def test_native_classifier_matches_transformers(num_labels):
    """NomicBertForSequenceClassification: nomic_bert.-prefixed stack, tanh pooler, classifier."""
    folder = hf_model("nomic_bert", "classification", num_labels=num_labels)
    arch, params, unused = loaded_params(folder)
    assert unused == []
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    rng = np.random.default_rng(34)
    pairs = list(zip(tm.random_texts(rng, 5, 1, 25), tm.random_texts(rng, 5, 1, 25)))
    items = [model.tokenizer.encode(a, pair=b, truncate=True) for a, b in pairs]
    out, _ = torch_outputs(folder, items, "classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < 1e-5
    alone = model.engine.run_all(PREDICT, items[:1])[0]
    assert np.abs(alone - logits[0]).max() < 1e-5


def hub_config(version: str, **extra) -> dict:
    """nomic-embed-text-v1.5 or -v2-moe style remote-code config (tiny)."""
    config = dict(
        architectures=["NomicBertModel"], model_type="nomic_bert",
        auto_map={"AutoConfig": "nomic-ai/nomic-bert-2048--configuration_hf_nomic_bert.NomicBertConfig",
                  "AutoModel": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel"},
        n_embd=32, n_head=4, n_inner=37, n_layer=2, n_positions=8192, max_trained_positions=2048,
        layer_norm_epsilon=1e-12, vocab_size=30528, pad_vocab_size_multiple=64, type_vocab_size=2,
        activation_function="swiglu", qkv_proj_bias=False, mlp_fc1_bias=False, mlp_fc2_bias=False,
        rotary_emb_base=1000, rotary_emb_fraction=1.0, rotary_emb_interleaved=False, rotary_emb_scale_base=None,
        rotary_scaling_factor=None, prenorm=False, causal=False, parallel_block=False, use_rms_norm=False,
    )
    if version == "v2-moe":
        config.update(activation_function="gelu", qkv_proj_bias=True, mlp_fc1_bias=True, mlp_fc2_bias=True,
                      rotary_emb_base=10000, type_vocab_size=1, n_layer=2, moe_every_n_layers=2, num_experts=4,
                      moe_top_k=2, moe_normalize_expert_weights=False, moe_impl="megablocks", pad_token_id=1)
    config.update(extra)
    return config


def published_shapes(c: dict) -> dict:
    h, i, e = c["n_embd"], c["n_inner"], c.get("num_experts")
    shapes = {"embeddings.word_embeddings.weight": (c["vocab_size"], h),
              "embeddings.token_type_embeddings.weight": (c["type_vocab_size"], h),
              "emb_ln.weight": (h,), "emb_ln.bias": (h,)}
    every = c.get("moe_every_n_layers") or 0
    for n in range(c["n_layer"]):
        p = f"encoder.layers.{n}."
        shapes.update({p + "attn.Wqkv.weight": (3 * h, h), p + "attn.out_proj.weight": (h, h),
                       p + "norm1.weight": (h,), p + "norm1.bias": (h,), p + "norm2.weight": (h,), p + "norm2.bias": (h,)})
        if c["qkv_proj_bias"]:
            shapes.update({p + "attn.Wqkv.bias": (3 * h,), p + "attn.out_proj.bias": (h,)})
        if every and n % every == 1:
            shapes.update({p + "mlp.router.layer.weight": (e, h), p + "mlp.experts.mlp.w1": (e * i, h),
                           p + "mlp.experts.mlp.w2": (e * i, h), p + "mlp.experts.bias": (h,)})
            continue
        ups = ("fc11", "fc12") if c["activation_function"] == "swiglu" else ("fc1",)
        for up in ups:
            shapes[p + f"mlp.{up}.weight"] = (i, h)
            if c["mlp_fc1_bias"]:
                shapes[p + f"mlp.{up}.bias"] = (i,)
        shapes[p + "mlp.fc2.weight"] = (h, i)
        if c["mlp_fc2_bias"]:
            shapes[p + "mlp.fc2.bias"] = (h,)
    return shapes


@pytest.mark.parametrize("version", ["v1.5", "v2-moe"])
def test_hub_layout_matches_numpy_reference(version):
    config = hub_config(version)
    tensors = random_weights(published_shapes(config), seed=32)
    folder = fake_checkpoint(f"nomic-{version}", config, tensors)
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=33, n=6, max_words=40)
    weights = Weights(tensors)
    refs = [nomic(weights, config, list(i.input_ids), [0] * len(i)) for i in items]
    for hidden, ref in zip(model.engine.run_all(EMBED_ALL, items), refs):
        assert np.abs(hidden - ref).max() < 1e-5
    assert np.abs(model.embed(texts, normalize=False) - np.stack([r.mean(0) for r in refs])).max() < 1e-5
    for k in (0, 3):
        assert np.abs(model.engine.run_all(EMBED_ALL, [items[k]])[0] - refs[k]).max() < 1e-5


@pytest.mark.parametrize("field,value", [
    ("rotary_scaling_factor", 2.0),
    ("rotary_emb_interleaved", True),
    ("prenorm", True),
    ("activation_function", "geglu"),
    ("moe_normalize_expert_weights", 1),
])
def test_unsupported_config_names_the_field(field, value):
    folder = fake_checkpoint(f"nomic-bad-{field}", {**hub_config("v2-moe"), field: value}, {"unused": np.zeros(1, np.float32)})
    with pytest.raises(ModelLoadError, match=field):
        loaded_params(folder)
