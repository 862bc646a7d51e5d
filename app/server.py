"""The Flask application: routes, auth, CORS, body limit, error pages, log spans.

`create_app` is called in the gunicorn worker (after fork); it returns at once and loads the
model in the background, so the worker answers /health (503) while it warms up.
"""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from . import logging_setup, openapi, routes
from .service import Service
from .settings import Settings

log = logging.getLogger("app.server")

# Routes that answer without the api key (TEI's public routes).
PUBLIC = {("GET", "/health"), ("GET", "/"), ("GET", "/ping"), ("GET", "/metrics"),
          ("GET", "/api-doc/openapi.json")}
_BODIES = {413: "Failed to buffer the request body: length limit exceeded"}


def create_app(settings: Settings, service: Service | None = None, start: bool = True) -> Flask:
    """Build the app around a `Service`; with `start`, begin loading the model."""
    app = Flask("tei_jax_server")
    app.config["MAX_CONTENT_LENGTH"] = settings.payload_limit
    app.config["TEI_SERVICE"] = service = service or Service(settings)
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.bp)
    origins = settings.cors_allow_origin
    CORS(app, origins="*" if not origins or "*" in origins else origins, methods=["GET", "POST"],
         allow_headers=["content-type"])

    @app.before_request
    def _span_and_auth():
        span = {"method": request.method, "path": request.path, "id": uuid.uuid4().hex[:16]}
        traceparent = request.headers.get("traceparent")
        if traceparent:
            span["traceparent"] = traceparent
        logging_setup.current_span.set(span)
        if settings.api_key is None or request.url_rule is None or request.method == "OPTIONS":
            return None
        if _public(request.method, request.path):
            return None
        if request.headers.get("Authorization") != f"Bearer {settings.api_key}":
            return Response(b"", status=401)
        return None

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # axum's defaults: empty 404/405, a plain-text 413.
        return Response(_BODIES.get(exc.code or 500, ""), status=exc.code or 500, mimetype="text/plain")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        from tei_jax.errors import BackendError

        from .errors import tei_response

        return tei_response(BackendError(f"Backend error: {type(exc).__name__}"),
                            openai=request.path in ("/v1/embeddings", "/embeddings"))

    if settings.otlp_endpoint:
        from . import tracing

        tracing.install(app, settings.otlp_endpoint, settings.otlp_service_name)
    if start:
        service.start()
    return app


def _public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method == "GET" and (path == "/docs" or path.startswith("/docs/")))
