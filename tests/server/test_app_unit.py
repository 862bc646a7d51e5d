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
