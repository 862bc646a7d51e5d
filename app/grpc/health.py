"""The standard grpc.health.v1 service, following the model's warmup.

TEI opens its gRPC port only once the model is ready, then reports Info and Tokenize SERVING
and the services of the model's type (Embed; Predict; Rerank and Predict) SERVING while the
backend is healthy. Here the port is open during the load and warmup (as HTTP answers 503
meanwhile), so every service, the overall "" included, is NOT_SERVING until the model is
ready; then Info, Tokenize, "" and the model type's services are SERVING. The others stay
NOT_SERVING: calling them always fails with FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health, health_pb2

from ..service import Service

log = logging.getLogger("app.grpc.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ALWAYS = ("", "tei.v1.Info", "tei.v1.Tokenize")
BY_KIND = {
    "embedding": ("tei.v1.Embed",),
    "classifier": ("tei.v1.Predict",),
    "reranker": ("tei.v1.Predict", "tei.v1.Rerank"),
}


def serving_services(kind: str) -> tuple[str, ...]:
    """What answers SERVING once a model of `kind` is ready."""
    return ALWAYS + BY_KIND[kind]


class Health:
    """A HealthServicer plus the thread that flips it when the service becomes ready."""

    def __init__(self, service: Service, services: list[str]):
        self.servicer = health.HealthServicer()
        self._service = service
        for name in ["", *services]:
            self.servicer.set(name, NOT_SERVING)
        self._thread = threading.Thread(target=self._follow, name="tei-jax-grpc-health", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _follow(self) -> None:
        while not self._service.ready.wait(0.5):
            if self._stopped.is_set():
                return
        for name in serving_services(self._service.model.kind):
            self.servicer.set(name, SERVING)
        log.info("gRPC health: %s SERVING", ", ".join(n or '""' for n in serving_services(self._service.model.kind)))

    def stop(self) -> None:
        """Shutting down: every service NOT_SERVING (load balancers stop sending)."""
        self._stopped.set()
        self.servicer.enter_graceful_shutdown()
