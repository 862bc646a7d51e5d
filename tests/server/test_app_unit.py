"""The Flask app without a model (test client, no gunicorn): 503s before the model is ready,
the offline docs, and OTLP tracing wired in only when asked for."""

from __future__ import annotations

from app.server import create_app
from app.settings import parse_settings


def client(*flags):
    settings = parse_settings(["--hostname", "127.0.0.1", *flags])
    return create_app(settings, start=False).test_client()


def test_everything_is_503_until_the_model_is_ready():
    app = client()
    for path in ("/health", "/", "/ping"):
        response = app.get(path)
        assert response.status_code == 503
        assert response.json == {"error": "unhealthy", "error_type": "Unhealthy"}
    refused = app.post("/embed", json={"inputs": "a"})
    assert refused.status_code == 503 and refused.json["error_type"] == "Unhealthy"
    assert app.get("/info").status_code == 503
    openai = app.post("/v1/embeddings", json={"input": "a"})
    assert openai.status_code == 503 and openai.json == {"message": "the model is starting", "code": 503,
                                                         "type": "Unhealthy"}
    assert app.get("/metrics").status_code == 200


def test_docs_are_served_offline():
    app = client()
    page = app.get("/docs/")
    assert page.status_code == 200 and b"/api-doc/openapi.json" in page.data
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert app.get(f"/docs/{name}").status_code == 200, name
    assert app.get("/docs/../setup.cfg").status_code == 404


def test_otlp_spans_only_with_the_flag(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    endpoints = []
    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter",
                        lambda endpoint, insecure: endpoints.append(endpoint) or exported)
    plain = create_app(parse_settings([]), start=False)
    assert "tei_otlp" not in plain.extensions
    traced = create_app(parse_settings(["--otlp-endpoint", "http://127.0.0.1:4317"]), start=False)
    response = traced.test_client().get("/health", headers={
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert response.status_code == 503
    traced.extensions["tei_otlp"].force_flush()
    [span] = exported.get_finished_spans()
    assert endpoints == ["http://127.0.0.1:4317"] and span.name == "GET /health"
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.attributes["http.status_code"] == 503


def chunked(app, path, body: bytes, **headers):
    """Call the WSGI app with a body that has no Content-Length, as gunicorn hands a chunked one."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path=path, method="POST", data=body, headers=headers,
                             content_type="application/json").get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    app_iter, status, response_headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    return int(status.split()[0]), b"".join(app_iter)


def test_a_chunked_body_over_the_limit_is_413_not_cut_and_parsed():
    app = create_app(parse_settings(["--payload-limit", "100"]), start=False)
    prefix_is_valid_json = b'{"inputs": "a"}' + b" " * 200
    status, body = chunked(app, "/embed", prefix_is_valid_json)
    assert status == 413 and body == b"Failed to buffer the request body: length limit exceeded"
    status, _ = chunked(app, "/embed", b'{"inputs": "a"}')  # under the limit: reaches the route
    assert status == 503  # (no model here)


def test_head_follows_get_and_the_key_is_checked():
    app = client("--api-key", "sekret")
    for path in ("/health", "/ping", "/", "/metrics"):
        assert app.head(path).status_code == app.get(path).status_code != 401, path
    assert app.get("/info").status_code == 401
    assert app.get("/info", headers={"Authorization": "Bearer sekret"}).status_code == 503
    assert app.get("/info", headers={"Authorization": "Bearer sekreT"}).status_code == 401
    assert app.get("/info", headers={"Authorization": "Bearer s\u00e9kret"}).status_code == 401


def test_cors_is_a_wildcard_by_default_and_varies_with_a_list():
    origin = {"Origin": "null"}
    default = client().get("/health", headers=origin)
    assert default.headers["Access-Control-Allow-Origin"] == "*"
    listed = client("--cors-allow-origin", "http://a.test").get("/health", headers={"Origin": "http://a.test"})
    assert listed.headers["Access-Control-Allow-Origin"] == "http://a.test"
    assert "Origin" in listed.headers.get("Vary", "")
    stranger = client("--cors-allow-origin", "http://a.test").get("/health", headers=origin)
    assert "Access-Control-Allow-Origin" not in stranger.headers and "Origin" in stranger.headers["Vary"]


def test_metrics_content_type_is_teis():
    assert client().get("/metrics").headers["Content-Type"] == "text/plain; charset=utf-8"
