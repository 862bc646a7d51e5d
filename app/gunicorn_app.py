"""The gunicorn application: one worker owns the device; its threads run the requests.

The worker (`app.worker.TEIWorker`, gthread's model) reads every request completely in its
main loop before one of its `--worker-threads` takes it, so slow clients hold no thread.
The master never imports JAX state: the Flask app (and with it the model) is built in the
worker after fork (`preload_app` stays off). SIGTERM makes the worker close its listening
socket, answer every request it already received (up to `--graceful-timeout` seconds), then
stop the batcher.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from . import logging_setup
from .settings import Settings

log = logging.getLogger("app.gunicorn")

# The worker heartbeat keeps beating while the model loads in a background thread; this only
# bounds a worker that is truly stuck.
WORKER_TIMEOUT_S = 120


class TEIApplication(BaseApplication):
    """`TEIApplication(settings).run()` serves until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.flask_app = None
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": [s.bind],
            "workers": 1,
            "worker_class": worker_class(s.payload_limit, s.cors_allow_origin),
            "threads": s.worker_threads,
            "worker_connections": max(1000, s.max_concurrent_requests + s.worker_threads),
            "timeout": WORKER_TIMEOUT_S,
            "graceful_timeout": s.graceful_timeout,
            "keepalive": 5,
            "max_requests": 0,
            "preload_app": False,
            "backlog": 2048,
            "accesslog": None,
            "logconfig_dict": logging_setup.dict_config(s.json_output, s.disable_spans),
            "proc_name": "text-embeddings-router",
            "control_socket_disable": True,
            "worker_exit": _worker_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        """Runs in the worker (after fork): build the app and start loading the model."""
        from .server import create_app

        self.flask_app = create_app(self.settings)
        if self.settings.grpc_port:
            from .grpc.lifecycle import serve_beside

            service = self.flask_app.config["TEI_SERVICE"]
            self.flask_app.config["TEI_GRPC_SERVER"] = serve_beside(service, self.settings)
        return self.flask_app


def worker_class(payload_limit: int, cors_origins=None) -> type:
    """TEIWorker with this server's body limit and CORS origins (gunicorn builds the worker
    from a class)."""
    from .worker import TEIWorker

    return type("TEIWorker", (TEIWorker,), {"payload_limit": payload_limit,
                                            "cors_origins": tuple(cors_origins or ())})


def _worker_exit(server, worker) -> None:
    """After the worker's drain: stop the batching thread once its queue is empty."""
    app = getattr(worker, "wsgi", None)
    config = app.config if app is not None and hasattr(app, "config") else {}
    if config.get("TEI_GRPC_SERVER") is not None:
        from .grpc.lifecycle import finish

        finish(config["TEI_GRPC_SERVER"], server.cfg.graceful_timeout)
    service = config.get("TEI_SERVICE")
    if service is not None:
        service.stop(timeout=5)
    log.info("worker stopped")
