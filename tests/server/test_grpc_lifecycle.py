"""`--grpc`: gRPC instead of HTTP on --port, as TEI's gRPC image. Health NOT_SERVING until the
model is warm, Prometheus metrics on --prometheus-port, and SIGTERM draining a running stream."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import requests
import tiny_models as tm
from live_servers import Server, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.grpc.proto import tei_pb2 as pb
from app.grpc.proto import tei_pb2_grpc as rpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def test_grpc_instead_of_http_follows_warmup_and_drains_on_sigterm():
    metrics_port = free_port()
    server = Server("grpc-only", ["--grpc", "--model-id", str(tm.embedding_model()), "--max-batch-tokens", "256",
                                  "--prometheus-port", str(metrics_port), "--graceful-timeout", "30"])
    target = f"127.0.0.1:{server.port}"
    try:
        # Reconnect quickly while the process starts, so the short not-ready window is seen.
        fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                          ("grpc.max_reconnect_backoff_ms", 100)]
        with grpc.insecure_channel(target, options=fast_reconnect) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            seen: list[int] = []
            deadline = time.monotonic() + 300
            while not seen or seen[-1] != SERVING:
                assert time.monotonic() < deadline, server.log()[-3000:]
                assert server.proc.poll() is None, server.log()[-3000:]
                try:
                    check = health_pb2.HealthCheckRequest(service="tei.v1.Embed")
                    seen.append(health.Check(check, timeout=5, wait_for_ready=True).status)
                    if seen[-1] != SERVING:
                        error = _refusal(rpc.EmbedStub(ch).Embed, pb.EmbedRequest(inputs="a"))
                        if error is None:  # answered: only if the model got ready meanwhile
                            assert _soon(lambda: health.Check(check, timeout=5).status == SERVING)
                        else:
                            assert error.code() == grpc.StatusCode.UNAVAILABLE and "the model is" in error.details()
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc
                time.sleep(0.05)
            assert seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING and seen[-1] == SERVING
            status = health.Check(health_pb2.HealthCheckRequest(service="tei.v1.Rerank")).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert rpc.InfoStub(ch).Info(pb.InfoRequest()).model_type == pb.MODEL_TYPE_EMBEDDING
            # No HTTP on --port: it speaks HTTP/2 gRPC only.
            try:
                plain = requests.get(f"http://{target}/health", timeout=5).status_code
            except requests.RequestException:
                plain = None
            assert plain != 200
            assert "te_request_count" in requests.get(f"http://127.0.0.1:{metrics_port}/metrics").text

            # A long stream in flight at SIGTERM is answered to its end; new calls are refused.
            texts = [f"draining message {i} " + "word " * 60 for i in range(300)]
            answers: list = []
            started = threading.Event()

            def messages():
                for i, text in enumerate(texts):
                    if i == 10:
                        started.set()
                    if i >= 10:
                        time.sleep(0.01)  # the client is still sending when SIGTERM comes
                    yield pb.EmbedRequest(inputs=text, truncate=True)

            def consume():
                answers.extend(rpc.EmbedStub(ch).EmbedStream(messages()))

            consumer = threading.Thread(target=consume)
            consumer.start()
            assert started.wait(60)
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            consumer.join(120)
            assert len(answers) == len(texts)
            assert time.monotonic() - signalled > 1  # the stream was still running at SIGTERM
            assert server.proc.wait(60) == 0
            assert "gRPC server stopped" in server.log()
    finally:
        server.stop()


def _soon(condition, seconds: float = 10.0) -> bool:
    """True once `condition()` is (health follows readiness from its own thread)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _refusal(call, request) -> grpc.RpcError | None:
    """The call's error, or None when it was answered."""
    try:
        call(request, timeout=10)
    except grpc.RpcError as exc:
        return exc
    return None
