"""tei.v1 over gRPC beside HTTP (fleet servers started with --grpc-port): every method on
embedding, classifier, reranker and SPLADE models, streams, errors, auth, health, reflection,
metrics, and the same numbers as over HTTP."""

from __future__ import annotations

import re
import time

import grpc
import numpy as np
import pytest
import requests
from live_servers import API_KEY
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from app.grpc.proto import tei_pb2 as pb
from app.grpc.proto import tei_pb2_grpc as rpc

DIM = 32  # tiny model hidden size
KEY = (("authorization", f"Bearer {API_KEY}"),)
TIMING = ("x-compute-type", "x-compute-time", "x-total-time", "x-compute-characters", "x-compute-tokens",
          "x-tokenization-time", "x-queue-time", "x-inference-time")
Code = grpc.StatusCode


def channel(server) -> grpc.Channel:
    return grpc.insecure_channel(server.grpc_target)


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)
    return info.value


@pytest.fixture(scope="module")
def embed_channel(embed_server):
    with channel(embed_server) as ch:
        yield ch


@pytest.fixture(scope="module")
def embed_stub(embed_channel):
    return rpc.EmbedStub(embed_channel)


def http(server, path, body, headers=None):
    response = requests.post(server.url + path, json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


# Embedding model -----------------------------------------------------------------------------
def test_embed_equals_http_and_carries_timings(embed_server, embed_stub, auth):
    text = "What is Deep Learning?"
    answer, call = embed_stub.Embed.with_call(pb.EmbedRequest(inputs=text), metadata=KEY)
    vector = np.array(answer.embeddings)
    assert vector.shape == (DIM,)
    assert np.allclose(vector, http(embed_server, "/embed", {"inputs": text}, auth)[0], atol=1e-6)
    assert abs(np.linalg.norm(vector) - 1) < 1e-5  # normalize unset means true
    headers = dict(call.initial_metadata())
    assert all(name in headers for name in TIMING)
    assert headers["x-compute-tokens"] == "7" and headers["x-compute-characters"] == str(len(text))
    assert answer.metadata.compute_tokens == 7 and answer.metadata.compute_chars == len(text)
    assert answer.metadata.total_time_ns >= answer.metadata.inference_time_ns > 0


def test_embed_options_follow_http(embed_server, embed_stub, auth):
    text = "a b c d e f g h " * 40  # longer than the tiny model's 128 tokens
    raw = embed_stub.Embed(pb.EmbedRequest(inputs="hello", normalize=False, dimensions=8), metadata=KEY)
    expected = http(embed_server, "/embed", {"inputs": "hello", "normalize": False, "dimensions": 8}, auth)[0]
    assert np.allclose(raw.embeddings, expected, atol=1e-6) and len(raw.embeddings) == 8
    left = embed_stub.Embed(pb.EmbedRequest(inputs=text, truncate=True,
                                            truncation_direction=pb.TRUNCATION_DIRECTION_LEFT), metadata=KEY)
    expected = http(embed_server, "/embed", {"inputs": text, "truncate": True, "truncation_direction": "Left"},
                    auth)[0]
    assert np.allclose(left.embeddings, expected, atol=1e-6)
    # proto3: truncate unset is false, so a long input is refused (HTTP's null would truncate).
    error = refused(embed_stub.Embed, pb.EmbedRequest(inputs=text), metadata=KEY)
    assert error.code() == Code.INVALID_ARGUMENT and "must have less than 128 tokens" in error.details()


def test_embed_errors_have_tei_codes_and_messages(embed_stub, embed_channel):
    # The same text as over HTTP, the core's prefix included (TEI: Status::new(code, error.to_string())).
    cases = [
        (pb.EmbedRequest(inputs=""), Code.INVALID_ARGUMENT, "Input validation error: `inputs` cannot be empty"),
        (pb.EmbedRequest(inputs="a", dimensions=0), Code.INVALID_ARGUMENT,
         "Input validation error: `dimensions` should be positive"),
        (pb.EmbedRequest(inputs="a", dimensions=DIM + 1), Code.INVALID_ARGUMENT,
         "Input validation error: `dimensions` should be smaller than the maximum embedding dimension."),
    ]
    for request, code, text in cases:
        error = refused(embed_stub.Embed, request, metadata=KEY)
        assert (error.code(), error.details()) == (code, text), request
    prompt = refused(embed_stub.Embed, pb.EmbedRequest(inputs="a", prompt_name="nope"), metadata=KEY)
    assert prompt.details().startswith("Input validation error: `default-prompt-name` is set to `nope`")
    sparse = refused(embed_stub.EmbedSparse, pb.EmbedSparseRequest(inputs="a"), metadata=KEY)
    assert (sparse.code(), sparse.details()) == (
        Code.FAILED_PRECONDITION, "Backend error: Model is not an embedding model with SPLADE pooling")
    predict = refused(rpc.PredictStub(embed_channel).Predict, pb.PredictRequest(inputs="a"), metadata=KEY)
    assert predict.details() == "Backend error: Model is not a classifier model"
    # TEI's gRPC Rerank words the model type itself, bare: an embedding model is "not a classifier".
    rerank = refused(rpc.RerankStub(embed_channel).Rerank, pb.RerankRequest(query="q", texts=["a"]), metadata=KEY)
    assert (rerank.code(), rerank.details()) == (Code.FAILED_PRECONDITION, "model is not a classifier model")
    decode = refused(rpc.TokenizeStub(embed_channel).Decode, pb.DecodeRequest(ids=[]), metadata=KEY)
    assert decode.details() == "Input validation error: `input_ids` cannot be empty"


def test_a_stream_of_1000_answers_in_order_with_http_vectors(embed_server, embed_stub, auth):
    texts = [f"message number {i} " + "word " * (i % 23) for i in range(1000)]
    answers = list(embed_stub.EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts), metadata=KEY))
    assert len(answers) == 1000
    assert [a.metadata.compute_chars for a in answers] == [len(t) for t in texts]
    sample = [0, 1, 499, 998, 999]
    expected = http(embed_server, "/embed", {"inputs": [texts[i] for i in sample]}, auth)
    for i, vector in zip(sample, expected):
        assert np.allclose(answers[i].embeddings, vector, atol=1e-5), i


def test_a_stream_ends_at_its_first_bad_message(embed_stub):
    messages = [pb.EmbedRequest(inputs="fine"), pb.EmbedRequest(inputs=""), pb.EmbedRequest(inputs="late")]
    stream = embed_stub.EmbedStream(iter(messages), metadata=KEY)
    assert len(next(stream).embeddings) == DIM
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    assert info.value.code() == Code.INVALID_ARGUMENT and "cannot be empty" in info.value.details()


def test_embed_all_and_its_stream(embed_server, embed_stub, auth):
    answer = embed_stub.EmbedAll(pb.EmbedAllRequest(inputs="hello world"), metadata=KEY)
    expected = np.array(http(embed_server, "/embed_all", {"inputs": "hello world"}, auth)[0])
    states = np.array([t.embeddings for t in answer.token_embeddings])
    assert states.shape == expected.shape == (4, DIM) and np.allclose(states, expected, atol=1e-6)
    streamed = list(embed_stub.EmbedAllStream(iter([pb.EmbedAllRequest(inputs="hello world")] * 3), metadata=KEY))
    assert [len(a.token_embeddings) for a in streamed] == [4, 4, 4]


def test_tokenize_decode_and_info(embed_server, embed_channel, auth):
    tokenize = rpc.TokenizeStub(embed_channel)
    tokens = tokenize.Tokenize(pb.EncodeRequest(inputs="hello world", add_special_tokens=True), metadata=KEY).tokens
    expected = http(embed_server, "/tokenize", {"inputs": "hello world"}, auth)[0]
    assert [(t.id, t.text, t.special) for t in tokens] == [(e["id"], e["text"], e["special"]) for e in expected]
    assert not tokens[0].HasField("start") and (tokens[1].start, tokens[1].stop) == (0, 5)
    ids = [t.id for t in tokens]
    assert tokenize.Decode(pb.DecodeRequest(ids=ids, skip_special_tokens=True), metadata=KEY).text == "hello world"
    streamed = list(tokenize.TokenizeStream(iter([pb.EncodeRequest(inputs="a"), pb.EncodeRequest(inputs="b c")]),
                                            metadata=KEY))
    assert [len(s.tokens) for s in streamed] == [1, 2]  # add_special_tokens unset is false
    decoded = list(tokenize.DecodeStream(iter([pb.DecodeRequest(ids=ids[1:2]), pb.DecodeRequest(ids=ids)]),
                                         metadata=KEY))
    assert [d.text for d in decoded] == ["hello", "[CLS] hello world [SEP]"]
    assert refused(tokenize.Decode, pb.DecodeRequest(), metadata=KEY).code() == Code.INVALID_ARGUMENT
    info = rpc.InfoStub(embed_channel).Info(pb.InfoRequest(), metadata=KEY)
    http_info = requests.get(embed_server.url + "/info", headers=auth).json()
    assert info.model_type == pb.MODEL_TYPE_EMBEDDING
    assert (info.model_id, info.max_input_length, info.max_batch_tokens, info.max_client_batch_size) == (
        http_info["model_id"], http_info["max_input_length"], http_info["max_batch_tokens"],
        http_info["max_client_batch_size"])
    assert info.version == http_info["version"] and not info.HasField("max_batch_requests")


def test_api_key_is_needed_except_for_health_and_reflection(embed_channel):
    error = refused(rpc.EmbedStub(embed_channel).Embed, pb.EmbedRequest(inputs="a"))
    assert error.code() == Code.UNAUTHENTICATED and error.details() == "No valid auth token"
    wrong = (("authorization", "Bearer nope"),)
    assert refused(rpc.InfoStub(embed_channel).Info, pb.InfoRequest(), metadata=wrong).code() == Code.UNAUTHENTICATED
    stream = rpc.EmbedStub(embed_channel).EmbedStream(iter([pb.EmbedRequest(inputs="a")]))
    assert refused(lambda: stream).code() == Code.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(embed_channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert "tei.v1.Embed" in list_services(embed_channel)


def list_services(ch: grpc.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    return sorted(s.name for s in answer.list_services_response.service)


def test_reflection_lists_every_service_and_describes_tei_v1(embed_channel):
    assert list_services(embed_channel) == [
        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "tei.v1.Embed", "tei.v1.Info",
        "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize"]
    stub = reflection_pb2_grpc.ServerReflectionStub(embed_channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="tei.v1.Embed")
    answer = next(stub.ServerReflectionInfo(iter([request])))
    assert answer.file_descriptor_response.file_descriptor_proto  # what grpcurl needs, no .proto at hand


def test_health_reports_the_model_types_services(embed_channel, classifier_server, reranker_server):
    def statuses(ch):
        stub = health_pb2_grpc.HealthStub(ch)
        names = ("", "tei.v1.Info", "tei.v1.Tokenize", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank")
        return {n: health_pb2.HealthCheckResponse.ServingStatus.Name(
            stub.Check(health_pb2.HealthCheckRequest(service=n)).status) for n in names}

    base = {"": "SERVING", "tei.v1.Info": "SERVING", "tei.v1.Tokenize": "SERVING"}
    assert statuses(embed_channel) == {**base, "tei.v1.Embed": "SERVING", "tei.v1.Predict": "NOT_SERVING",
                                       "tei.v1.Rerank": "NOT_SERVING"}
    with channel(classifier_server) as ch:
        assert statuses(ch) == {**base, "tei.v1.Embed": "NOT_SERVING", "tei.v1.Predict": "SERVING",
                                "tei.v1.Rerank": "NOT_SERVING"}
    with channel(reranker_server) as ch:
        assert statuses(ch) == {**base, "tei.v1.Embed": "NOT_SERVING", "tei.v1.Predict": "SERVING",
                                "tei.v1.Rerank": "SERVING"}


def test_grpc_calls_are_counted_in_the_te_metrics(embed_server, embed_stub, embed_channel, auth):
    def count(text, name, label):
        found = re.search(rf'^{name}\{{{label}\}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = requests.get(embed_server.url + "/metrics", headers=auth).text
    list(embed_stub.EmbedStream(iter([pb.EmbedRequest(inputs="counted")] * 5), metadata=KEY))
    refused(embed_stub.Embed, pb.EmbedRequest(inputs=""), metadata=KEY)
    rpc.TokenizeStub(embed_channel).Tokenize(pb.EncodeRequest(inputs="not counted"), metadata=KEY)  # as in TEI
    after = requests.get(embed_server.url + "/metrics", headers=auth).text
    def grew(name, label):
        return count(after, name, label) - count(before, name, label)

    assert grew("te_request_count", 'method="single"') == 6
    assert grew("te_request_success", 'method="single"') == 5
    assert grew("te_request_failure", 'err="validation"') == 1
    assert re.search(r"^te_embed_success \d+$", after, re.M)


# Classifier ----------------------------------------------------------------------------------
def test_classifier_predict_and_pairs(classifier_server):
    with channel(classifier_server) as ch:
        stub = rpc.PredictStub(ch)
        single, call = stub.Predict.with_call(pb.PredictRequest(inputs="I like you"))
        expected = http(classifier_server, "/predict", {"inputs": "I like you"})
        assert [p.label for p in single.predictions] == [e["label"] for e in expected]
        assert np.allclose([p.score for p in single.predictions], [e["score"] for e in expected], atol=1e-6)
        assert "x-compute-tokens" in dict(call.initial_metadata())
        pair = stub.PredictPair(pb.PredictPairRequest(inputs=["I like you", "I love you"], raw_scores=True))
        expected = http(classifier_server, "/predict", {"inputs": ["I like you", "I love you"], "raw_scores": True})
        assert np.allclose([p.score for p in pair.predictions], [e["score"] for e in expected], atol=1e-6)
        one = stub.PredictPair(pb.PredictPairRequest(inputs=["I like you"]))
        assert np.allclose([p.score for p in one.predictions], [p.score for p in single.predictions], atol=1e-6)
        error = refused(stub.PredictPair, pb.PredictPairRequest(inputs=["a", "b", "c"]))
        assert error.code() == Code.INVALID_ARGUMENT
        assert error.details() == "`inputs` must have a single or two elements. Given: 3"
        streamed = list(stub.PredictStream(iter([pb.PredictRequest(inputs="I like you")] * 4)))
        assert [s.predictions[0].label for s in streamed] == [single.predictions[0].label] * 4
        pairs = list(stub.PredictPairStream(iter([pb.PredictPairRequest(inputs=["I like you", "I love you"])] * 2)))
        assert len(pairs) == 2 and len(pairs[0].predictions) == 3
        wrong = refused(rpc.RerankStub(ch).Rerank, pb.RerankRequest(query="a", texts=["b"]))
        assert wrong.code() == Code.FAILED_PRECONDITION and wrong.details() == "model is not a re-ranker model"
        embed = refused(rpc.EmbedStub(ch).Embed, pb.EmbedRequest(inputs="a"))
        assert embed.code() == Code.FAILED_PRECONDITION and embed.details() == "Backend error: Model is not an embedding model"
        assert rpc.InfoStub(ch).Info(pb.InfoRequest()).model_type == pb.MODEL_TYPE_CLASSIFIER


# Reranker ------------------------------------------------------------------------------------
TEXTS = ["the cat sat on the mat", "quick brown fox", "embeddings are vectors"]
QUERY = "where is the cat?"


def test_rerank_equals_http(reranker_server):
    with channel(reranker_server) as ch:
        stub = rpc.RerankStub(ch)
        answer, call = stub.Rerank.with_call(pb.RerankRequest(query=QUERY, texts=TEXTS, return_text=True))
        expected = http(reranker_server, "/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True})
        assert [(r.index, r.text) for r in answer.ranks] == [(e["index"], e["text"]) for e in expected]
        assert np.allclose([r.score for r in answer.ranks], [e["score"] for e in expected], atol=1e-6)
        headers = dict(call.initial_metadata())
        assert headers["x-compute-characters"] == str(len(QUERY) * 3 + sum(len(t) for t in TEXTS))
        plain = stub.Rerank(pb.RerankRequest(query=QUERY, texts=TEXTS))
        assert not any(r.HasField("text") for r in plain.ranks)
        empty = refused(stub.Rerank, pb.RerankRequest(query=QUERY))
        assert empty.code() == Code.INVALID_ARGUMENT and empty.details() == "`texts` cannot be empty"
        too_many = refused(stub.Rerank, pb.RerankRequest(query=QUERY, texts=["b"] * 33))
        assert too_many.code() == Code.INVALID_ARGUMENT
        assert too_many.details() == "batch size 33 > maximum allowed batch size 32"
        # 10 texts need 10 permits; this server has 8.
        overloaded = refused(stub.Rerank, pb.RerankRequest(query=QUERY, texts=["b"] * 10))
        assert overloaded.code() == Code.RESOURCE_EXHAUSTED and overloaded.details() == "Model is overloaded"
        predict = rpc.PredictStub(ch).PredictPair(pb.PredictPairRequest(inputs=[QUERY, TEXTS[0]]))
        assert len(predict.predictions) == 1


def test_rerank_stream_ranks_every_message_with_the_first_ones_options(reranker_server):
    with channel(reranker_server) as ch:
        stub = rpc.RerankStub(ch)
        texts = [f"text {i} " + "cat " * (i % 5) for i in range(40)]  # more than the 8 permits: they wait
        messages = [pb.RerankStreamRequest(query=QUERY, text=t, return_text=(i == 0), raw_scores=(i == 0))
                    for i, t in enumerate(texts)]
        answer, call = stub.RerankStream.with_call(iter(messages))
        assert sorted(r.index for r in answer.ranks) == list(range(40))
        assert all(r.text == texts[r.index] for r in answer.ranks)
        scores = [r.score for r in answer.ranks]
        assert scores == sorted(scores, reverse=True)
        expected = {e["index"]: e["score"] for e in http(
            reranker_server, "/rerank", {"query": QUERY, "texts": texts[:8], "raw_scores": True})}
        got = {r.index: r.score for r in answer.ranks if r.index < 8}
        assert np.allclose([got[i] for i in range(8)], [expected[i] for i in range(8)], atol=1e-5)
        assert answer.metadata.compute_chars == sum(len(QUERY) + len(t) for t in texts)
        assert "x-compute-tokens" in dict(call.initial_metadata())


# SPLADE --------------------------------------------------------------------------------------
def test_splade_sparse_embeddings_equal_http(splade_server):
    with channel(splade_server) as ch:
        stub = rpc.EmbedStub(ch)
        answer = stub.EmbedSparse(pb.EmbedSparseRequest(inputs="the cat"))
        expected = http(splade_server, "/embed_sparse", {"inputs": "the cat"})[0]
        assert [v.index for v in answer.sparse_embeddings] == [e["index"] for e in expected]
        assert np.allclose([v.value for v in answer.sparse_embeddings], [e["value"] for e in expected], atol=1e-5)
        streamed = list(stub.EmbedSparseStream(iter([pb.EmbedSparseRequest(inputs="the cat")] * 12)))
        assert len(streamed) == 12 and all(s.sparse_embeddings == answer.sparse_embeddings for s in streamed)
        # SPLADE refuses normalisation (unset means true) and per-token states, as over HTTP.
        assert refused(stub.Embed, pb.EmbedRequest(inputs="a")).code() == Code.FAILED_PRECONDITION
        dense = stub.Embed(pb.EmbedRequest(inputs="the cat", normalize=False))
        assert len(dense.embeddings) > 0
        assert refused(stub.EmbedAll, pb.EmbedAllRequest(inputs="a")).code() == Code.FAILED_PRECONDITION


def test_a_cancelled_stream_frees_its_permits(reranker_server):
    with channel(reranker_server) as ch:
        stub = rpc.PredictStub(ch)
        stream = stub.PredictStream(iter([pb.PredictRequest(inputs=f"text {i} " * 20, truncate=True)
                                          for i in range(300)]))
        for _ in range(5):
            next(stream)
        stream.cancel()
        # Then a call that needs all 8 permits at once gets them (the stream's were all returned).
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = rpc.RerankStub(ch).Rerank(pb.RerankRequest(query=QUERY, texts=["b"] * 8))
                break
            except grpc.RpcError as exc:
                assert exc.code() == Code.RESOURCE_EXHAUSTED and time.monotonic() < deadline, exc
                time.sleep(0.2)
        assert len(answer.ranks) == 8
