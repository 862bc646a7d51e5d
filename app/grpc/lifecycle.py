"""Start and stop the gRPC server with the process that owns the model.

- beside HTTP (`--grpc-port P`): in the gunicorn worker, after the Flask app (and its
  `Service`) is built. SIGTERM begins the gRPC drain at once, alongside gunicorn's HTTP drain;
  the worker's exit hook waits for it before the batcher stops.
- instead of HTTP (`--grpc`): a plain process serving gRPC on --port and, as TEI's gRPC build
  does, Prometheus metrics on --prometheus-port. SIGTERM/SIGINT drain it the same way.
"""

from __future__ import annotations

import logging
import signal
import threading

from ..service import Service
from ..settings import Settings
from .server import GrpcServer

log = logging.getLogger("app.grpc.lifecycle")
SERVICE_STOP_TIMEOUT_S = 5


def serve_beside(service: Service, settings: Settings) -> GrpcServer:
    """Serve gRPC on --grpc-port next to the worker's HTTP; SIGTERM starts its drain."""
    server = GrpcServer(service, settings, settings.grpc_port)
    server.start()
    _on_signals((signal.SIGTERM, signal.SIGINT, signal.SIGQUIT),
                lambda: server.stop(settings.graceful_timeout))
    return server


def serve_alone(settings: Settings) -> int:
    """`--grpc`: load the model and serve gRPC on --port until SIGTERM/SIGINT; returns 0."""
    service = Service(settings)
    server = GrpcServer(service, settings, settings.port)
    _serve_metrics(service, settings)
    stopping = threading.Event()
    _on_signals((signal.SIGTERM, signal.SIGINT), stopping.set)
    service.start()
    server.start()
    while not stopping.wait(1.0):
        pass
    server.stop(settings.graceful_timeout).wait(settings.graceful_timeout + 5)
    service.stop(timeout=SERVICE_STOP_TIMEOUT_S)
    server.close()
    log.info("gRPC server stopped")
    return 0


def finish(server: GrpcServer | None, grace: float) -> None:
    """The worker is exiting: drain gRPC (if it is not already) and wait for it."""
    if server is not None:
        server.stop(grace).wait(grace + 5)
        server.close()


def _on_signals(signals, action) -> None:
    """Run `action` on a thread when one of `signals` arrives, then the previous handler (a
    signal handler must not block on the server's locks)."""
    for signum in signals:
        previous = signal.getsignal(signum)

        def handler(number, frame, previous=previous):
            threading.Thread(target=action, name="tei-jax-grpc-stop", daemon=True).start()
            if callable(previous):
                previous(number, frame)

        signal.signal(signum, handler)
        if signum == signal.SIGTERM:
            signal.siginterrupt(signum, False)  # as gunicorn has it: running calls are not interrupted


def _serve_metrics(service: Service, settings: Settings) -> None:
    """GET /metrics on --prometheus-port, rendered as the HTTP server's /metrics is."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ..metrics import CONTENT_TYPE

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            if service.scheduler is not None:
                service.metrics.queue_size.set(service.scheduler.queue_size)
            body = service.metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    try:
        httpd = ThreadingHTTPServer((settings.hostname, settings.prometheus_port), Metrics)
    except OSError as exc:
        log.warning("Prometheus metrics not served on port %d: %s", settings.prometheus_port, exc)
        return
    threading.Thread(target=httpd.serve_forever, name="tei-jax-metrics", daemon=True).start()
    log.info("Serving Prometheus metrics: %s:%d", settings.hostname, settings.prometheus_port)
