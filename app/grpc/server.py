"""The gRPC server of one worker: the tei.v1 services, health, reflection and the api key,
on a grpcio thread-pool server sharing the worker's `Service` (model, queue, permits, metrics).

Threads: `worker_threads` handle calls (a call holds one while it runs, as an HTTP request
holds a gthread thread); as many again run stream messages, so a stream's messages are in
flight together while its own handler thread reads and answers them in order.
"""

from __future__ import annotations

import hmac
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_reflection.v1alpha import reflection

from ..service import Service
from ..settings import Settings
from . import servicers
from .calls import Calls
from .health import Health
from .status import UNAUTHENTICATED_MESSAGE
from .streams import max_parallel

log = logging.getLogger("app.grpc.server")

# Services that answer without the api key (as in TEI: health checks and reflection).
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ApiKey(grpc.ServerInterceptor):
    """`--api-key`: every tei.v1 call needs `authorization: Bearer <key>` metadata."""

    def __init__(self, api_key: str):
        self._expected = f"Bearer {api_key}".encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

        self._refusals = {
            (False, False): grpc.unary_unary_rpc_method_handler(refuse),
            (False, True): grpc.unary_stream_rpc_method_handler(refuse),
            (True, False): grpc.stream_unary_rpc_method_handler(refuse),
            (True, True): grpc.stream_stream_rpc_method_handler(refuse),
        }

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(PUBLIC_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode("utf-8", "surrogateescape")
        if hmac.compare_digest(given, self._expected):  # constant time, as over HTTP
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method stays UNIMPLEMENTED
        return self._refusals[(handler.request_streaming, handler.response_streaming)]


class GrpcServer:
    """`start()` binds and serves in the background; `stop(grace)` refuses new calls at once
    and lets running ones finish for up to `grace` seconds (SIGTERM's drain)."""

    def __init__(self, service: Service, settings: Settings, port: int):
        self.service = service
        self.address = f"[{settings.hostname}]:{port}" if ":" in settings.hostname else f"{settings.hostname}:{port}"
        threads = settings.worker_threads
        self._stream_pool = ThreadPoolExecutor(threads, thread_name_prefix="tei-jax-grpc-stream")
        interceptors = [ApiKey(settings.api_key)] if settings.api_key else []
        self._server = grpc.server(ThreadPoolExecutor(threads, thread_name_prefix="tei-jax-grpc"),
                                   interceptors=interceptors,
                                   options=[("grpc.max_receive_message_length", settings.payload_limit)])
        names = servicers.add_all(self._server, Calls(service, self._stream_pool, max_parallel()))
        self.health = Health(service, names)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        self.service_names = [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                              reflection.SERVICE_NAME]
        reflection.enable_server_reflection(self.service_names, self._server)
        if self._server.add_insecure_port(self.address) == 0:
            raise OSError(f"gRPC: cannot listen on {self.address}")
        self._stopped: threading.Event | None = None
        self._stopping = threading.Lock()  # SIGTERM's thread and the worker's exit hook both stop it

    def start(self) -> None:
        self._server.start()
        self.health.start()
        log.info("Starting gRPC server: %s", self.address)

    def stop(self, grace: float) -> threading.Event:
        """Begin the drain (idempotent); the event is set once every call has ended."""
        with self._stopping:
            if self._stopped is None:
                log.info("gRPC server stopping: refusing new calls, %ss for running ones", grace)
                self.health.stop()
                self._stopped = self._server.stop(grace)
            return self._stopped

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def close(self) -> None:
        self._stream_pool.shutdown(wait=False, cancel_futures=True)
