"""The Flask application: routes, auth, CORS, body limit, error pages, log spans.

`create_app` is called in the gunicorn worker (after fork); it returns at once and loads the
model in the background, so the worker answers /health (503) while it warms up.
"""

from __future__ import annotations

import hmac
import io
import logging
import uuid

from flask import Flask, Response, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from . import logging_setup, openapi, routes
from .service import Service
from .settings import Settings

log = logging.getLogger("app.server")

# Routes that answer without the api key (TEI's public routes); HEAD follows GET.
PUBLIC = {("GET", "/health"), ("GET", "/"), ("GET", "/ping"), ("GET", "/metrics"),
          ("GET", "/api-doc/openapi.json")}
TOO_LARGE = "Failed to buffer the request body: length limit exceeded"
_BODIES = {413: TOO_LARGE}


def create_app(settings: Settings, service: Service | None = None, start: bool = True) -> Flask:
    """Build the app around a `Service`; with `start`, begin loading the model."""
    app = Flask("tei_jax_server")
    app.config["MAX_CONTENT_LENGTH"] = settings.payload_limit
    app.config["TEI_SERVICE"] = service = service or Service(settings)
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.bp)
    app.wsgi_app = BodyLimit(app.wsgi_app, settings.payload_limit)
    origins = settings.cors_allow_origin
    any_origin = not origins or "*" in origins
    # TEI (tower-http): `*` unless a list is given; a listed origin is echoed, with Vary.
    CORS(app, origins="*" if any_origin else origins, send_wildcard=any_origin, methods=["GET", "POST"],
         allow_headers=["content-type"])
    expected = f"Bearer {settings.api_key}".encode() if settings.api_key is not None else None

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
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return routes.bare_response(401)
        return None

    if not any_origin:
        @app.after_request
        def _vary_origin(response: Response) -> Response:
            response.vary.add("Origin")
            return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # axum's defaults: empty 404/405 (no Content-Type either), a plain-text 413.
        status = exc.code or 500
        if status not in _BODIES:
            return routes.bare_response(status)
        return Response(_BODIES[status], status=status, mimetype="text/plain")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        from tei_jax.errors import BackendError

        from .errors import tei_response

        return tei_response(BackendError(type(exc).__name__),
                            openai=request.path in ("/v1/embeddings", "/embeddings"))

    if settings.otlp_endpoint:
        from . import tracing

        tracing.install(app, settings.otlp_endpoint, settings.otlp_service_name)
    if start:
        service.start()
    return app


def _public(method: str, path: str) -> bool:
    method = "GET" if method == "HEAD" else method
    return (method, path) in PUBLIC or (method == "GET" and (path == "/docs" or path.startswith("/docs/")))


class BodyLimit:
    """WSGI middleware: a body without Content-Length (chunked) larger than `limit` is refused
    with 413 like one that declares its length, instead of being cut at the limit and parsed.
    (Werkzeug stops reading at the limit without a word; the worker refuses most of these
    before a thread sees them, this covers every other way in.)"""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ, start_response):
        if environ.get("CONTENT_LENGTH") or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.app(environ, start_response)
        body = _read_up_to(environ["wsgi.input"], self.limit + 1)
        if len(body) > self.limit:
            start_response("413 Payload Too Large", [("Content-Type", "text/plain; charset=utf-8"),
                                                     ("Content-Length", str(len(TOO_LARGE))),
                                                     ("Connection", "close")])
            return [TOO_LARGE.encode()]
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.app(environ, start_response)


def _read_up_to(stream, size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
