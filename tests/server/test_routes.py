"""Every route in-process (Flask's test client over a fake executor): validation, errors,
TEI's order of checks and response shapes, for each kind of model. What only a real process
shows (gunicorn, signals, warmup, hang-ups, concurrency, real numbers) is in the other files."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tiny_models as tm
from fake_app import HIDDEN, make_client

TIMING_HEADERS = ("x-compute-type", "x-compute-time", "x-total-time", "x-compute-characters", "x-compute-tokens",
                  "x-tokenization-time", "x-queue-time", "x-inference-time")


@pytest.fixture(scope="module")
def embedder():
    return make_client(tm.embedding_model(), "--max-concurrent-requests", "40")


@pytest.fixture(scope="module")
def classifier():
    return make_client(tm.make_model("bert", "classification", num_labels=3))


@pytest.fixture(scope="module")
def reranker():
    return make_client(tm.make_model("bert", "classification", num_labels=1))


@pytest.fixture(scope="module")
def splade():
    return make_client(tm.make_model("bert", "masked_lm"), "--max-concurrent-requests", "4", pooling="splade")


def test_embed_shapes_headers_and_token_ids(embedder):
    single = embedder.post("/embed", json={"inputs": "What is Deep Learning?"})
    assert single.status_code == 200, single.data
    vectors = np.array(single.json)
    assert vectors.shape == (1, HIDDEN) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for header in TIMING_HEADERS:
        assert header in single.headers
    assert single.headers["x-compute-type"] == "gpu+optimized"
    assert single.headers["x-compute-tokens"] == "7" and single.headers["x-compute-characters"] == "22"
    batch = np.array(embedder.post("/embed", json={"inputs": ["hello", "What is Deep Learning?"]}).json)
    assert batch.shape == (2, HIDDEN) and np.allclose(batch[1], vectors[0], atol=1e-6)
    by_ids = embedder.post("/embed", json={"inputs": [101, 7592, 2088, 102]})  # ONE input
    assert len(by_ids.json) == 1 and by_ids.headers["x-compute-characters"] == "4"
    assert np.allclose(by_ids.json, embedder.post("/embed", json={"inputs": "hello world"}).json, atol=1e-6)
    short = embedder.post("/embed", json={"inputs": "x", "dimensions": 8, "normalize": False}).json
    assert np.array(short).shape == (1, 8)


@pytest.mark.parametrize("body, status, error_type, message", [
    ({"inputs": ""}, 400, "Empty", "Input validation error: `inputs` cannot be empty"),
    ({"inputs": []}, 400, "Empty", "Input validation error: `inputs` cannot be empty"),  # one empty id list
    ({"inputs": ["a"] * 33}, 422, "Validation", "batch size 33 > maximum allowed batch size 32"),
    ({"inputs": "word " * 300, "truncate": False}, 422, "Validation",
     "Input validation error: `inputs` must have less than 128 tokens. Given: 302"),
    ({"inputs": "x", "dimensions": 0}, 422, "Validation", "Input validation error: `dimensions` should be positive"),
    ({"inputs": "x", "dimensions": 33}, 422, "Validation",
     "Input validation error: `dimensions` should be smaller than the maximum embedding dimension."),
    ({"inputs": "x", "prompt_name": "nope"}, 422, "Validation", "Input validation error: `default-prompt-name` is "
     "set to `nope` but no prompts were found in the Sentence Transformers configuration"),
    ({"inputs": [999999999]}, 400, "Empty", "Input validation error: `inputs` cannot be empty"),  # TEI drops it
])
def test_embed_errors(embedder, body, status, error_type, message):
    response = embedder.post("/embed", json=body)
    assert response.status_code == status, response.data
    assert set(response.json) == {"error", "error_type"} and response.json["error_type"] == error_type
    if message is not None:
        assert response.json["error"] == message


def test_framework_errors_are_plain_text_in_teis_words(embedder):
    # serde's wording, path and position, as TEI's axum Json answers (tests/server/test_json_rejection.py).
    bad_json = embedder.post("/embed", data=b"{nope", content_type="application/json")
    assert bad_json.status_code == 400 and bad_json.mimetype == "text/plain"
    assert bad_json.text == "Failed to parse the request body as JSON: key must be a string at line 1 column 2"
    shape = "Failed to deserialize the JSON body into the target type: "
    for body, text in (
            ({"inputs": 5}, "inputs: data did not match any variant of untagged enum Input at line 1 column 13"),
            ({"nothing": 1}, "missing field `inputs` at line 1 column 14"),
            ({"inputs": "a", "normalize": "yes"},
             'normalize: invalid type: string "yes", expected a boolean at line 1 column 34'),
            ({"inputs": "a", "dimensions": -1}, "dimensions: invalid value: integer `-1`, expected usize at line 1 column 32")):
        wrong = embedder.post("/embed", data=json.dumps(body), content_type="application/json")  # keys in order
        assert (wrong.status_code, wrong.text) == (422, shape + text), body
    pairs = embedder.post("/rerank", data=json.dumps({"query": "q", "texts": ["a", 2]}),
                          content_type="application/json")
    assert (pairs.status_code, pairs.text) == (422, shape + "texts[1]: invalid type: integer `2`, expected a string "
                                                            "at line 1 column 31")
    assert embedder.post("/embed", data=b'{"inputs":"a"}').status_code == 415
    assert embedder.post("/nope", json={}).status_code == 404
    assert embedder.get("/embed").status_code == 405


def test_embed_all_similarity_openai_tokenize_decode(embedder):
    states = embedder.post("/embed_all", json={"inputs": ["What is Deep Learning?", "hi"]}).json
    assert [len(s) for s in states] == [7, 3] and len(states[0][0]) == HIDDEN
    scores = embedder.post("/similarity", json={"inputs": {"source_sentence": "the cat",
                                                           "sentences": ["the cat", "a dog"]}}).json
    assert len(scores) == 2 and abs(scores[0] - 1) < 1e-5
    empty = embedder.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": []}})
    assert empty.status_code == 400 and empty.json["error"] == "`inputs.sentences` cannot be empty"
    body = embedder.post("/v1/embeddings", json={"input": ["hello world", "hi"], "model": "x"}).json
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["prompt_tokens"] == 4 + 3
    encoded = embedder.post("/embeddings", json={"input": "hello world", "encoding_format": "base64"}).json
    vector = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vector, embedder.post("/embed", json={"inputs": "hello world"}).json[0], atol=1e-6)
    error = embedder.post("/v1/embeddings", json={"input": ""})
    assert error.status_code == 400 and set(error.json) == {"message", "code", "type"}
    [tokens] = embedder.post("/tokenize", json={"inputs": "What is"}).json
    assert [t["id"] for t in tokens] == [101, 2054, 2003, 102]
    assert embedder.post("/decode", json={"ids": [2054, 2003]}).json == ["what is"]
    assert embedder.post("/decode", json={"ids": []}).json["error"] == "Input validation error: `input_ids` cannot be empty"


@pytest.mark.parametrize("instance, text", [
    ({"inputs": 3}, "data did not match any variant of untagged enum Input"),
    ({"input": "a"}, "missing field `inputs`"),
    ({"inputs": "a", "normalize": "yes"}, 'invalid type: string "yes", expected a boolean'),
    ({"normalize": "yes", "inputs": 3}, "data did not match any variant of untagged enum Input"),  # keys sorted
    ({"inputs": "a", "truncation_direction": "up"}, "unknown variant `up`, expected `Left` or `Right`"),
    ("a", 'invalid type: string "a", expected struct EmbedRequest'),
    (["a", None, "Left", None, True, None, 1], "invalid length 7, expected fewer elements in array"),
])
def test_vertex_refuses_an_instance_in_serdes_words(embedder, instance, text):
    # TEI reads each instance with serde_json::from_value: serde's message, no path, no position.
    refused = embedder.post("/vertex", json={"instances": [{"inputs": "fine"}, instance]})
    assert refused.status_code == 422
    assert refused.json == {"error": text, "error_type": "Validation"}


def test_vertex_refuses_a_classifier_instance_as_a_predict_body(classifier):
    refused = classifier.post("/vertex", json={"instances": [{"inputs": []}]})
    assert refused.status_code == 422 and refused.json["error"] == (
        "invalid length 0, expected a string, a pair of strings [string, string] or a batch of mixed strings "
        "and pairs [[string], [string, string], ...]")


def test_default_routes_vertex_and_info(embedder):
    expected = embedder.post("/embed", json={"inputs": "hello"}).json
    for path in ("/", "/invocations"):
        assert np.allclose(embedder.post(path, json={"inputs": "hello"}).json, expected, atol=1e-6)
    vertex = embedder.post("/vertex", json={"instances": [{"inputs": "hello"}, {"inputs": ["a", "b"]}]})
    assert vertex.status_code == 200 and "x-compute-time" not in vertex.headers
    assert np.allclose(vertex.json["predictions"][0], expected, atol=1e-6)
    assert embedder.post("/vertex", json={"instances": [{"inputs": 3}]}).json["error_type"] == "Validation"
    info = embedder.get("/info").json
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] == 128
    # Ours beside TEI's fields: where the model runs (one CPU device here).
    assert info["sharding"]["mesh"] == {"data": 1, "model": 1} and info["sharding"]["platform"] == "cpu"
    assert embedder.get("/health").status_code == 200


def test_wrong_model_type_is_424(embedder, classifier):
    cases = [(embedder, "/embed_sparse", {"inputs": "a"}, "Model is not an embedding model with SPLADE pooling"),
             (embedder, "/predict", {"inputs": "a"}, "Model is not a classifier model"),
             (embedder, "/rerank", {"query": "a", "texts": ["b"]}, "model is not a re-ranker model"),
             (classifier, "/embed", {"inputs": "a"}, "Model is not an embedding model"),
             (classifier, "/embed_all", {"inputs": "a"}, "Model is not an embedding model"),
             (classifier, "/rerank", {"query": "a", "texts": ["b"]}, "model is not a re-ranker model")]
    for client, path, body, message in cases:
        response = client.post(path, json=body)
        assert response.status_code == 424, path
        assert response.json == {"error": f"Backend error: {message}", "error_type": "Backend"}, path
    # TEI's order: an empty input before the model type
    assert embedder.post("/rerank", json={"query": "a", "texts": []}).json["error_type"] == "Empty"


def test_classifier_shapes(classifier):
    single = classifier.post("/predict", json={"inputs": "I like you"}).json
    assert sorted(s["label"] for s in single) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert [s["score"] for s in single] == sorted((s["score"] for s in single), reverse=True)
    assert isinstance(classifier.post("/predict", json={"inputs": ["a", "b"]}).json[0], dict)  # one pair
    batch = classifier.post("/predict", json={"inputs": [["I like you"], ["a", "b"]]}).json
    assert len(batch) == 2 and batch[0] == single
    for bad in ({"inputs": ["a", "b", "c"]}, {"inputs": []}, {"inputs": [["a", "b", "c"]]}):
        assert classifier.post("/predict", json=bad).status_code == 422, bad
    assert classifier.post("/", json={"inputs": "I like you"}).json == single
    assert "classifier" in classifier.get("/info").json["model_type"]


def test_reranker_shapes(reranker):
    texts = ["the cat sat", "quick brown fox", "vectors"]
    ranks = reranker.post("/rerank", json={"query": "cat?", "texts": texts, "return_text": True})
    assert ranks.status_code == 200
    assert sorted(r["index"] for r in ranks.json) == [0, 1, 2] and all(r["text"] == texts[r["index"]] for r in ranks.json)
    assert ranks.headers["x-compute-characters"] == str(len("cat?") * 3 + sum(len(t) for t in texts))
    assert reranker.post("/rerank", json={"query": "a", "texts": ["b"] * 33}).status_code == 422
    default = reranker.post("/invocations", json={"query": "cat?", "texts": texts}).json
    assert [r["index"] for r in default] == [r["index"] for r in ranks.json]
    assert reranker.post("/predict", json={"inputs": ["cat?", texts[0]]}).status_code == 200


def test_splade_shapes_and_429(splade):
    entries = splade.post("/embed_sparse", json={"inputs": ["the cat", "a fox"]}).json
    for item in entries:
        assert [e["index"] for e in item] == sorted(e["index"] for e in item) and all(e["value"] > 0 for e in item)
    refused = splade.post("/embed", json={"inputs": "the cat"})
    assert refused.status_code == 424
    assert refused.json["error"] == "Backend error: `normalize` is not available for SPLADE models"
    assert splade.post("/embed_all", json={"inputs": "x"}).json["error"] == (
        "Backend error: `embed_all` is not available for SPLADE models")
    assert splade.post("/", json={"inputs": "the cat"}).json == [entries[0]]
    over = splade.post("/embed_sparse", json={"inputs": ["a", "b", "c", "d", "e"]})  # 4 permits
    assert over.status_code == 429 and over.json == {"error": "Model is overloaded", "error_type": "Overloaded"}
    metrics = splade.get("/metrics").data.decode()
    assert 'te_request_failure{err="overloaded"} 1' in metrics


WEIRD_BODIES = [None, [], 3, "text", {}, {"inputs": None}, {"inputs": [[]]}, {"inputs": [["a"]]},
                {"inputs": [1, "a"]}, {"inputs": [True]}, {"inputs": [-1]}, {"inputs": [2**40]},
                {"inputs": "a", "truncation_direction": "up"}, {"inputs": "a", "truncate": "no"},
                {"inputs": "\x00\ud7ff\U0001f600 \u200b"}, {"inputs": "é" * 40_000},
                {"input": [[]]}, {"query": "", "texts": [""]}, {"ids": [[]]}, {"ids": [-5]},
                {"ids": [[1], 2]}, {"inputs": {"source_sentence": "", "sentences": [""]}},
                {"instances": [None, 1]}, {"inputs": ["a", ""]}, {"inputs": [["a", ""]]}]
ALL_POST_ROUTES = ["/embed", "/embed_all", "/embed_sparse", "/predict", "/rerank", "/similarity", "/tokenize",
                   "/decode", "/v1/embeddings", "/embeddings", "/vertex", "/", "/invocations"]


@pytest.mark.parametrize("kind", ["embedder", "classifier", "reranker", "splade"])
def test_bad_input_never_gives_a_server_error(request, kind):
    client = request.getfixturevalue(kind)
    for path in ALL_POST_ROUTES:
        for body in WEIRD_BODIES:
            response = client.post(path, json=body)
            assert response.status_code < 500, (path, body, response.status_code, response.data[:200])
            assert b"Traceback" not in response.data
