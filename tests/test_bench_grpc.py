"""The bench's gRPC load (tei_jax/bench/grpc_loadgen.py): its hand-encoded requests are the
stubs' bytes, and both modes drive a real in-process gRPC server closed-loop."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from app.grpc.proto import tei_pb2 as pb
from tei_jax.bench import grpc_loadgen, report


@pytest.mark.parametrize("text", ["a", "What is Deep Learning?", "é" * 300])
def test_requests_are_what_the_stubs_serialize(text):
    assert grpc_loadgen.embed_request(text) == pb.EmbedRequest(inputs=text, normalize=True).SerializeToString()


@pytest.fixture(scope="module")
def echo_port():
    """A gRPC server answering tei.v1.Embed/Embed and /EmbedStream with an empty EmbedResponse."""
    answer = pb.EmbedResponse(embeddings=[1.0]).SerializeToString()

    def unary(request, context):
        assert pb.EmbedRequest.FromString(request).normalize
        return answer

    def stream(requests, context):
        for _ in requests:
            yield answer

    handler = grpc.method_handlers_generic_handler("tei.v1.Embed", {
        "Embed": grpc.unary_unary_rpc_method_handler(unary),
        "EmbedStream": grpc.stream_stream_rpc_method_handler(stream)})
    server = grpc.server(ThreadPoolExecutor(8), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.mark.parametrize("mode", [grpc_loadgen.UNARY, grpc_loadgen.STREAM])
def test_drive_counts_every_request(echo_port, mode):
    target = grpc_loadgen.GrpcTarget("ours grpc", echo_port, mode)
    bodies = [target.body([f"text {i}"]) for i in range(5)]
    outcome = grpc_loadgen.drive(target, bodies, concurrency=3, requests=30)
    assert outcome["completed"] == 30 and outcome["failed"] == 0
    assert len(outcome["latencies"]) == 30 and min(outcome["latencies"]) > 0
    with pytest.raises(ValueError, match="one input"):
        target.body(["a", "b"])


def test_grpc_rows_are_compared_with_http_not_with_the_peer():
    row = {"requests_per_s": 10.0, "requests_per_s_best": 11.0, "rounds": [{"requests_per_s": 10.0}],
           "p50_ms": 1.0, "p99_ms": 2.0, "failed": 0}
    result = {"mode": "server", "preset": "tiny", "batch_size": 1, "concurrency": 4, "headline": "median",
              "workload": {"name": "short", "count": 4, "mean_tokens": 5.0},
              "systems": {"tei-jax": {**row, "system": "tei-jax", "protocol": "http"},
                          "tei-jax grpc": {**row, "system": "tei-jax grpc", "protocol": "grpc",
                                           "requests_per_s": 15.0, "ratio_to_http": 1.5},
                          "infinity-emb": {**row, "system": "infinity-emb", "protocol": "http",
                                           "requests_per_s_best": 5.5}}}
    text = report.table(json.loads(json.dumps(result)))
    assert "vs http" in text and "1.50x" in text
    assert "2.00x" in text  # tei-jax's best round over the peer's, the gRPC row left out
