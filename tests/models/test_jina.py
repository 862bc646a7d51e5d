"""JinaBERT v2 (ALiBi, GLU) against an independent NumPy reference, on fake checkpoints with
exactly the published weight names: jina-embeddings-v2 (jinaai/jina-bert-implementation), its
qk-post-norm code variant, and the jina-reranker-v1 classifier (bert. prefix).

Tolerance (float32 against the float64 reference): max abs error < 1e-5.
"""

import numpy as np
import pytest
import tiny_models as tm
from encoder_models import fake_checkpoint, loaded_params, random_weights, shapes_match_module, texts_and_items
from numpy_reference import Weights, jina, pooler_classifier

from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError

IMPLEMENTATION = "jinaai/jina-bert-implementation"
QK_POST_NORM = "jinaai/jina-bert-v2-qk-post-norm"


def jina_config(code: str, heads: int = 4, hidden: int = 32, architecture: str = "JinaBertForMaskedLM", **extra) -> dict:
    return dict(
        _name_or_path=code, architectures=[architecture], model_type="bert",
        auto_map={"AutoConfig": f"{code}--configuration_bert.JinaBertConfig",
                  "AutoModel": f"{code}--modeling_bert.JinaBertModel"},
        hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=37,
        vocab_size=30528, type_vocab_size=2, max_position_embeddings=8192, layer_norm_eps=1e-12,
        position_embedding_type="alibi", feed_forward_type="geglu", hidden_act="gelu", pad_token_id=0,
        emb_pooler="mean", **extra,
    )


def published_shapes(c: dict, qk_post_norm: bool, prefix: str = "") -> dict:
    """The weight names and shapes of a published JinaBERT v2 checkpoint."""
    h, i = c["hidden_size"], c["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (c["vocab_size"], h),
        "embeddings.token_type_embeddings.weight": (c["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for proj in ("query", "key", "value"):
            shapes[p + f"attention.self.{proj}.weight"] = (h, h)
            shapes[p + f"attention.self.{proj}.bias"] = (h,)
        shapes.update({
            p + "attention.output.dense.weight": (h, h), p + "attention.output.dense.bias": (h,),
            p + "attention.output.LayerNorm.weight": (h,), p + "attention.output.LayerNorm.bias": (h,),
        })
        if qk_post_norm:
            for norm in ("attention.self.layer_norm_q", "attention.self.layer_norm_k", "layer_norm_1", "layer_norm_2"):
                shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (h,)
            shapes.update({p + "mlp.up_gated_layer.weight": (2 * i, h),
                           p + "mlp.down_layer.weight": (h, i), p + "mlp.down_layer.bias": (h,)})
        else:
            shapes.update({
                p + "mlp.gated_layers.weight": (2 * i, h), p + "mlp.wo.weight": (h, i), p + "mlp.wo.bias": (h,),
                p + "mlp.layernorm.weight": (h,), p + "mlp.layernorm.bias": (h,),
            })
    return {prefix + name: shape for name, shape in shapes.items()}


@pytest.mark.parametrize("code", [IMPLEMENTATION, QK_POST_NORM])
def test_embeddings_match_numpy_reference(code):
    qk_post_norm = code == QK_POST_NORM
    config = jina_config(code)
    tensors = random_weights(published_shapes(config, qk_post_norm), seed=1)
    folder = fake_checkpoint(f"jina-{qk_post_norm}", config, tensors)
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)

    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=3, n=7, max_words=40)
    weights = Weights(tensors)
    refs = [jina(weights, config, list(i.input_ids), list(i.type_ids), qk_post_norm) for i in items]
    for hidden, ref in zip(model.engine.run_all(EMBED_ALL, items), refs):
        assert hidden.shape == ref.shape
        assert np.abs(hidden - ref).max() < 1e-5
    pooled = model.embed(texts, normalize=False)
    assert np.abs(pooled - np.stack([r.mean(0) for r in refs])).max() < 1e-5
    alone = np.concatenate([model.embed(t, normalize=False) for t in texts[:3]])
    assert np.abs(alone - pooled[:3]).max() < 1e-5


def test_reranker_matches_numpy_reference():
    """jina-reranker-v1: bert.-prefixed encoder, pooler, classifier; 6 heads (ALiBi's
    non-power-of-two slopes)."""
    config = jina_config(IMPLEMENTATION, heads=6, hidden=36, architecture="JinaBertForSequenceClassification",
                         id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    shapes = published_shapes(config, False, prefix="bert.")
    shapes.update({"bert.pooler.dense.weight": (36, 36), "bert.pooler.dense.bias": (36,),
                   "classifier.weight": (1, 36), "classifier.bias": (1,)})
    tensors = random_weights(shapes, seed=2)
    folder = fake_checkpoint("jina-reranker", config, tensors, pooling=None)
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)

    model = tm.load_cached(folder)
    assert model.kind == "reranker"
    query = "what is the capital of france"
    docs = tm.random_texts(np.random.default_rng(5), 5, 1, 30)
    items = [model.tokenizer.encode(query, pair=d, truncate=True) for d in docs]
    weights = Weights(tensors, prefix="bert.")
    refs = [pooler_classifier(weights, jina(weights, config, list(i.input_ids), list(i.type_ids), False)) for i in items]
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - np.stack(refs)).max() < 1e-5
    ranked = model.rerank(query, docs, raw_scores=True)
    assert [r["index"] for r in ranked] == list(np.argsort(-np.stack(refs)[:, 0], kind="stable"))


@pytest.mark.parametrize("field,value", [("feed_forward_type", "original"), ("position_embedding_type", "relative_key")])
def test_unsupported_config_names_the_field(field, value):
    config = {**jina_config(IMPLEMENTATION), field: value}
    folder = fake_checkpoint(f"jina-bad-{field}", config, {"unused": np.zeros(1, np.float32)})
    with pytest.raises(ModelLoadError, match=field):
        loaded_params(folder)
