"""BERT, RoBERTa, XLM-RoBERTa, CamemBERT, DistilBERT against transformers at float32.

Tolerances (float32): hidden states max abs error < 1e-5; pooled outputs cosine > 0.9999 and
max abs error < 1e-5; logits/scores and SPLADE vectors max abs error < 1e-5.
"""

import numpy as np
import pytest
import tiny_models as tm

from tei_jax.engine import EMBED_ALL, PREDICT

FAMILIES = ["bert", "roberta", "xlm-roberta", "camembert", "distilbert"]


def _items(model, seed, n=6, max_words=30):
    texts = tm.random_texts(np.random.default_rng(seed), n, 1, max_words)
    return texts, [model.tokenizer.encode(t, truncate=True) for t in texts]


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_transformers(family):
    folder = tm.make_model(family, "base")
    tm.write_pooling(folder, "mean")
    model = tm.load_cached(folder)
    texts, items = _items(model, seed=hash(family) % 1000)
    out, mask = tm.torch_forward(folder, items, "base", family)
    ref = out.last_hidden_state.numpy()
    ours = model.engine.run_all(EMBED_ALL, items)
    for k, hidden in enumerate(ours):
        assert hidden.shape == (len(items[k]), ref.shape[-1])
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < 1e-5
    # Pooled (mean) embeddings, padded batch vs torch's masked mean.
    pooled_ref = (ref * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    pooled = model.embed(texts, normalize=False)
    assert np.abs(pooled - pooled_ref).max() < 1e-5
    cos = (pooled * pooled_ref).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(pooled_ref, axis=1)
    assert cos.min() > 0.9999


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_labels", [1, 3])
def test_classifier_logits_and_scores(family, num_labels):
    folder = tm.make_model(family, "classification", num_labels=num_labels)
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    texts, items = _items(model, seed=num_labels)
    out, _ = tm.torch_forward(folder, items, "classification", family)
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < 1e-5
    raw = model.predict([[t] for t in texts], raw_scores=True)
    for k, ranked in enumerate(raw):
        by_label = {r["label"]: r["score"] for r in ranked}
        assert [r["score"] for r in ranked] == sorted(by_label.values(), reverse=True)
        expected = out.logits.numpy()[k]
        assert np.allclose([by_label[f"LABEL_{i}"] for i in range(num_labels)], expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_splade_matches_masked_lm(family):
    folder = tm.make_model(family, "masked_lm")
    model = tm.load_cached(folder, pooling="splade")
    texts, items = _items(model, seed=7, n=4)
    out, mask = tm.torch_forward(folder, items, "masked_lm", family)
    ref = np.max(np.log1p(np.maximum(out.logits.numpy(), 0)) * mask[:, :, None], axis=1)
    dense = model.embed(texts, normalize=False)
    assert dense.shape == ref.shape
    assert np.abs(dense - ref).max() < 1e-5
    sparse = model.embed_sparse(texts)
    for k, entries in enumerate(sparse):
        indices = [e["index"] for e in entries]
        assert indices == sorted(indices)
        rebuilt = np.zeros_like(ref[k])
        rebuilt[indices] = [e["value"] for e in entries]
        assert np.abs(rebuilt - ref[k]).max() < 1e-5


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_batch_equals_items_alone(family):
    folder = tm.make_model(family, "base")
    tm.write_pooling(folder, "mean")
    model = tm.load_cached(folder)
    texts = tm.random_texts(np.random.default_rng(11), 9, 1, 40)
    batch = model.embed(texts)
    alone = np.concatenate([model.embed(t) for t in texts])
    assert np.abs(batch - alone).max() < 1e-5
