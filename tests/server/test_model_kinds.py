"""Classifier, reranker, SPLADE and the bundled MiniLM behind the real server."""

from __future__ import annotations

import numpy as np
import requests


def post(server, path, body):
    return requests.post(server.url + path, json=body, timeout=60)


def test_minilm_matches_the_reference(minilm_server):
    response = post(minilm_server, "/embed", {"inputs": "What is Deep Learning?"})
    assert response.status_code == 200
    vector = np.array(response.json()[0])
    assert vector.shape == (384,)
    assert np.allclose(vector[:4], [-0.077851, -0.03328, 0.019743, 0.007226], atol=1e-5)
    info = requests.get(minilm_server.url + "/info").json()
    assert info["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["max_input_length"] == 256
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["served_model_name"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_classifier_predict(classifier_server):
    single = post(classifier_server, "/predict", {"inputs": "I like you"})
    assert single.status_code == 200, single.text
    scores = single.json()
    assert sorted(s["label"] for s in scores) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5
    assert "x-compute-tokens" in single.headers
    pair = post(classifier_server, "/predict", {"inputs": ["I like you", "I love you"]}).json()
    assert isinstance(pair[0], dict)
    batch = post(classifier_server, "/predict", {"inputs": [["I like you"], ["I like you", "I love you"]]}).json()
    assert len(batch) == 2 and len(batch[0]) == 3
    assert [s["label"] for s in batch[0]] == [s["label"] for s in scores]
    assert np.allclose([s["score"] for s in batch[0]], [s["score"] for s in scores], atol=1e-5)
    assert np.allclose([s["score"] for s in batch[1]], [s["score"] for s in pair], atol=1e-5)
    raw = post(classifier_server, "/predict", {"inputs": "I like you", "raw_scores": True}).json()
    assert abs(sum(s["score"] for s in raw) - 1) > 1e-3
    for bad in ({"inputs": ["a", "b", "c"]}, {"inputs": []}, {"inputs": [["a", "b", "c"]]}):
        response = post(classifier_server, "/predict", bad)
        assert response.status_code == 422, bad
    assert post(classifier_server, "/", {"inputs": "I like you"}).json() == scores
    refused = post(classifier_server, "/rerank", {"query": "a", "texts": ["b"]})
    assert refused.status_code == 424 and refused.json()["error"] == "Backend error: model is not a re-ranker model"
    assert post(classifier_server, "/embed", {"inputs": "a"}).json() == {
        "error": "Backend error: Model is not an embedding model", "error_type": "Backend"}
    no_sentences = post(classifier_server, "/similarity", {"inputs": {"source_sentence": "a", "sentences": []}})
    assert no_sentences.status_code == 400 and no_sentences.json()["error_type"] == "Empty"  # before the type
    info = requests.get(classifier_server.url + "/info").json()
    assert info["model_type"]["classifier"]["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}


def test_reranker_rerank(reranker_server):
    texts = ["the cat sat on the mat", "quick brown fox", "embeddings are vectors"]
    response = post(reranker_server, "/rerank", {"query": "where is the cat?", "texts": texts})
    assert response.status_code == 200, response.text
    ranks = response.json()
    assert sorted(r["index"] for r in ranks) == [0, 1, 2] and all("text" not in r for r in ranks)
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    assert all(0 <= r["score"] <= 1 for r in ranks)
    query = len("where is the cat?")
    assert response.headers["x-compute-characters"] == str(query * 3 + sum(len(t) for t in texts))
    with_text = post(reranker_server, "/rerank", {"query": "where is the cat?", "texts": texts,
                                                  "return_text": True, "raw_scores": True}).json()
    assert {r["index"]: r["text"] for r in with_text} == dict(enumerate(texts))
    empty = post(reranker_server, "/rerank", {"query": "a", "texts": []})
    assert empty.status_code == 400 and empty.json() == {"error": "`texts` cannot be empty", "error_type": "Empty"}
    too_many = post(reranker_server, "/rerank", {"query": "a", "texts": ["b"] * 33})
    assert too_many.status_code == 422 and too_many.json()["error_type"] == "Validation"
    assert post(reranker_server, "/predict", {"inputs": ["where is the cat?", texts[0]]}).status_code == 200
    default = post(reranker_server, "/invocations", {"query": "where is the cat?", "texts": texts}).json()
    assert [r["index"] for r in default] == [r["index"] for r in ranks]
    vertex = post(reranker_server, "/vertex", {"instances": [{"query": "q", "texts": ["a", "b"]},
                                                             {"inputs": "a"}]}).json()["predictions"]
    assert len(vertex[0]) == 2 and vertex[1][0]["label"] == "LABEL_0"
    assert "reranker" in requests.get(reranker_server.url + "/info").json()["model_type"]


def test_splade(splade_server):
    response = post(splade_server, "/embed_sparse", {"inputs": ["the cat", "a quick brown fox"]})
    assert response.status_code == 200, response.text
    for entries in response.json():
        indices = [e["index"] for e in entries]
        assert indices == sorted(indices) and all(e["value"] > 0 for e in entries)
    dense = post(splade_server, "/embed", {"inputs": "the cat", "normalize": False}).json()[0]
    assert len(dense) == 30522
    sparse = {e["index"]: e["value"] for e in response.json()[0]}
    assert {i for i, v in enumerate(dense) if v != 0} == set(sparse)
    refused = post(splade_server, "/embed", {"inputs": "the cat"})
    assert refused.status_code == 424
    assert refused.json()["error"] == "Backend error: `normalize` is not available for SPLADE models"
    assert post(splade_server, "/embed_all", {"inputs": "the cat"}).status_code == 424
    assert post(splade_server, "/", {"inputs": "the cat"}).json() == [response.json()[0]]
    similarity = post(splade_server, "/similarity", {"inputs": {"source_sentence": "the cat",
                                                                "sentences": ["the cat", "a dog"]}})
    assert similarity.status_code == 200, similarity.text  # TEI embeds with normalize=false for it
    assert abs(similarity.json()[0] - 1) < 1e-4


def test_more_items_than_permits_is_429(splade_server):
    over = post(splade_server, "/embed_sparse", {"inputs": ["a", "b", "c", "d", "e"]})  # 4 permits
    assert over.status_code == 429
    assert over.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
    assert post(splade_server, "/embed_sparse", {"inputs": ["a", "b", "c", "d"]}).status_code == 200
    assert 'te_request_failure{err="overloaded"} 1' in requests.get(splade_server.url + "/metrics").text
