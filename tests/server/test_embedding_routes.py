"""Every route of an embedding model's real server (gunicorn, real HTTP, the real engine), with
TEI's shapes, headers and errors. Validation and error cases without a device, and the
bad-input sweep over every route and model kind, run in-process in test_routes.py."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

TIMING_HEADERS = ("x-compute-type", "x-compute-time", "x-total-time", "x-compute-characters", "x-compute-tokens",
                  "x-tokenization-time", "x-queue-time", "x-inference-time")
DIM = 32  # tiny model hidden size


@pytest.fixture(scope="module")
def post(embed_server, auth):
    def post(path, body, **kwargs):
        headers = dict(auth, **kwargs.pop("headers", {}))
        return requests.post(embed_server.url + path, json=body, headers=headers, timeout=60, **kwargs)

    return post


def test_embed_single_and_batch_with_headers(post):
    single = post("/embed", {"inputs": "What is Deep Learning?"})
    assert single.status_code == 200, single.text
    vectors = np.array(single.json())
    assert vectors.shape == (1, DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for header in TIMING_HEADERS:
        assert header in single.headers
    assert single.headers["x-compute-type"] == "gpu+optimized"  # TEI sends it on every device
    assert single.headers["x-compute-tokens"] == "7"  # [CLS] what is deep learning ? [SEP]
    assert single.headers["x-compute-characters"] == str(len("What is Deep Learning?"))
    batch = post("/embed", {"inputs": ["hello", "What is Deep Learning?", "a b c"]})
    assert batch.status_code == 200
    assert np.allclose(np.array(batch.json())[1], vectors[0], atol=1e-5)


def test_embed_options_and_token_ids(post):
    raw = np.array(post("/embed", {"inputs": "hello world", "normalize": False}).json())[0]
    assert not np.isclose(np.linalg.norm(raw), 1)
    short = np.array(post("/embed", {"inputs": "hello world", "dimensions": 8}).json())[0]
    assert short.shape == (8,)
    assert np.allclose(short, raw[:8] / np.linalg.norm(raw[:8]), atol=1e-5)
    by_ids = post("/embed", {"inputs": [101, 7592, 2088, 102]})  # [CLS] hello world [SEP] as ONE input
    assert by_ids.status_code == 200 and len(by_ids.json()) == 1
    assert by_ids.headers["x-compute-characters"] == "4"
    assert np.allclose(by_ids.json()[0], raw / np.linalg.norm(raw), atol=1e-5)
    unknown = post("/embed", {"inputs": [101, 7592, 999999, 2088, 102]})  # TEI's decode drops it
    assert unknown.status_code == 200 and np.allclose(unknown.json(), by_ids.json(), atol=1e-6)
    mixed = post("/embed", {"inputs": ["hello world", [101, 7592, 2088, 102]]})
    assert np.allclose(mixed.json()[0], mixed.json()[1], atol=1e-5)
    left = post("/embed", {"inputs": "word " * 300, "truncation_direction": "Left"})
    assert left.status_code == 200 and left.headers["x-compute-tokens"] == "128"


def test_embed_all(post):
    response = post("/embed_all", {"inputs": ["What is Deep Learning?", "hi"]})
    assert response.status_code == 200
    states = response.json()
    assert [len(s) for s in states] == [7, 3] and len(states[0][0]) == DIM
    assert "x-inference-time" in response.headers


def test_wrong_model_type_is_424(post):
    cases = {
        "/embed_sparse": ({"inputs": "a"}, "Backend error: Model is not an embedding model with SPLADE pooling"),
        "/predict": ({"inputs": "a"}, "Backend error: Model is not a classifier model"),
        "/rerank": ({"query": "a", "texts": ["b"]}, "Backend error: model is not a re-ranker model"),
    }
    empty_first = post("/rerank", {"query": "a", "texts": []})  # TEI: Empty before the model type
    assert empty_first.status_code == 400 and empty_first.json()["error_type"] == "Empty"
    for path, (body, message) in cases.items():
        response = post(path, body)
        assert response.status_code == 424, path
        assert response.json() == {"error": message, "error_type": "Backend"}


def test_similarity(post):
    response = post("/similarity", {"inputs": {"source_sentence": "the cat sat",
                                               "sentences": ["the cat sat", "quick brown fox", "the cat"]}})
    assert response.status_code == 200
    scores = response.json()
    assert len(scores) == 3 and abs(scores[0] - 1) < 1e-4 and all(-1.0001 <= s <= 1.0001 for s in scores)
    assert "x-compute-tokens" in response.headers
    empty = post("/similarity", {"inputs": {"source_sentence": "a", "sentences": []}})
    assert empty.status_code == 400 and empty.json()["error"] == "`inputs.sentences` cannot be empty"
    too_many = post("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"] * 32}})
    assert too_many.status_code == 422 and too_many.json()["error_type"] == "Validation"
    with_params = post("/similarity", {"inputs": {"source_sentence": "a b", "sentences": ["a b"]},
                                       "parameters": {"truncate": True, "truncation_direction": "left"}})
    assert with_params.status_code == 200


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings"])
def test_openai_route(post, path):
    floats = post(path, {"input": ["hello world", "What is Deep Learning?"], "model": "whatever"})
    assert floats.status_code == 200
    body = floats.json()
    assert body["object"] == "list" and body["model"] == "tiny-embed"
    assert [d["index"] for d in body["data"]] == [0, 1] and body["data"][0]["object"] == "embedding"
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
    assert "x-compute-time" in floats.headers
    encoded = post(path, {"input": "hello world", "encoding_format": "base64", "dimensions": 16}).json()
    vector = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    reference = np.array(post("/embed", {"inputs": "hello world", "dimensions": 16}).json()[0])
    assert vector.shape == (16,) and np.allclose(vector, reference, atol=1e-6)
    error = post(path, {"input": ""})
    assert error.status_code == 400
    assert error.json() == {"message": "Input validation error: `inputs` cannot be empty", "code": 400, "type": "Empty"}


def test_tokenize_and_decode(post):
    tokens = post("/tokenize", {"inputs": "What is Deep Learning?"})
    assert tokens.status_code == 200
    [first] = tokens.json()
    assert [t["id"] for t in first] == [101, 2054, 2003, 2784, 4083, 1029, 102]
    assert first[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert first[1] == {"id": 2054, "text": "What", "special": False, "start": 0, "stop": 4}
    assert "x-compute-time" not in tokens.headers
    batch = post("/tokenize", {"inputs": ["a", "b c"], "add_special_tokens": False}).json()
    assert [len(t) for t in batch] == [1, 2]
    assert post("/decode", {"ids": [2054, 2003, 2784, 4083]}).json() == ["what is deep learning"]
    assert post("/decode", {"ids": [[101, 2054, 102], [2003]], "skip_special_tokens": False}).json() == [
        "[CLS] what [SEP]", "is"]
    empty = post("/decode", {"ids": []})
    # `[]` reads as one empty id list (serde's untagged order), refused by TEI's core.
    assert empty.status_code == 400 and empty.json()["error"] == "Input validation error: `input_ids` cannot be empty"
    assert post("/tokenize", {"inputs": ""}).status_code == 400


def test_info(embed_server, auth):
    info = requests.get(embed_server.url + "/info", headers=auth).json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["served_model_name"] == "tiny-embed"
    assert info["max_input_length"] == 128 and info["max_batch_tokens"] == 256
    assert info["max_concurrent_requests"] == 512 and info["max_client_batch_size"] == 32
    assert info["auto_truncate"] is True and info["model_dtype"] == "float32"
    for key in ("model_id", "model_sha", "max_batch_requests", "tokenization_workers", "version", "sha",
                "docker_label"):
        assert key in info


def test_default_routes_and_vertex(embed_server, auth, post):
    expected = post("/embed", {"inputs": "hello"}).json()
    for path in ("/", "/invocations"):
        response = post(path, {"inputs": "hello"})
        assert response.status_code == 200 and np.allclose(response.json(), expected, atol=1e-6)
    for path in ("/health", "/", "/ping"):
        health = requests.get(embed_server.url + path)  # no api key needed
        assert health.status_code == 200 and health.content == b""
    vertex = post("/vertex", {"instances": [{"inputs": "hello"}, {"inputs": ["a", "b"], "normalize": False}]})
    assert vertex.status_code == 200 and "x-compute-time" not in vertex.headers
    predictions = vertex.json()["predictions"]
    assert np.allclose(predictions[0], expected, atol=1e-6) and len(predictions[1]) == 2
    bad = post("/vertex", {"instances": [{"inputs": 3}]})
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"
    many = post("/vertex", {"instances": [{"inputs": ["a"] * 20}, {"inputs": ["b"] * 13}]})
    assert many.status_code == 422 and many.json() == {
        "error": "batch size 33 > maximum allowed batch size 32", "error_type": "Validation"}


def test_auth(embed_server, auth):
    url = embed_server.url
    body = {"inputs": "hello"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": auth["Authorization"].lower()}):
        refused = requests.post(url + "/embed", json=body, headers=headers)
        assert refused.status_code == 401 and refused.content == b""
    assert requests.get(url + "/info").status_code == 401
    assert requests.post(url + "/embed", json=body, headers=auth).status_code == 200
    for path in ("/health", "/ping", "/", "/metrics", "/docs", "/api-doc/openapi.json"):
        assert requests.get(url + path).status_code == 200, path


def test_payload_limit(post):
    big = post("/embed", {"inputs": ["word " * 30_000] * 2})  # ~300 kB > 200 kB limit
    assert big.status_code == 413
    assert post("/embed", {"inputs": "word " * 1000}).status_code == 200


def test_cors(embed_server):
    preflight = requests.options(embed_server.url + "/embed", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.headers.get("Access-Control-Allow-Origin") in ("*", "http://example.test")
    assert "POST" in preflight.headers.get("Access-Control-Allow-Methods", "")


def test_metrics(embed_server, post):
    post("/embed", {"inputs": ["a", "b"]})
    text = requests.get(embed_server.url + "/metrics").text
    for name in ("te_request_count", "te_request_success", "te_request_failure",
                 "te_request_duration_bucket", "te_request_tokenization_duration_bucket",
                 "te_request_queue_duration_bucket", "te_request_inference_duration_bucket",
                 "te_request_input_length_bucket", "te_batch_next_size_bucket", "te_batch_next_tokens_bucket",
                 "te_batch_inference_duration_bucket", "te_queue_size", "te_padding_efficiency",
                 "te_embed_count", "te_compilations_after_warmup"):
        assert name in text, name
    assert 'te_request_count{method="batch"}' in text
    assert 'te_request_failure{err="validation"}' in text


def test_docs_and_openapi(embed_server):
    page = requests.get(embed_server.url + "/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert requests.get(embed_server.url + "/docs/swagger-ui-bundle.js").status_code == 200
    spec = requests.get(embed_server.url + "/api-doc/openapi.json").json()
    for path in ("/embed", "/embed_all", "/embed_sparse", "/predict", "/rerank", "/similarity", "/tokenize",
                 "/decode", "/v1/embeddings", "/embeddings", "/vertex", "/", "/invocations", "/info", "/health",
                 "/ping", "/metrics"):
        assert path in spec["paths"], path
    embed_schema = spec["components"]["schemas"]["EmbedRequest"]
    assert embed_schema["properties"]["normalize"]["default"] is True
    assert "422" in spec["paths"]["/embed"]["post"]["responses"]
