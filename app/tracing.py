"""`--otlp-endpoint`: a span per request sent over OTLP/gRPC, with the W3C `traceparent`
header as parent. OpenTelemetry is imported only when the flag is set (extra `otlp`)."""

from __future__ import annotations

import logging

from flask import Flask, g, request

log = logging.getLogger("app.tracing")


def install(app: Flask, endpoint: str, service_name: str) -> None:
    """Export a server span per request to `endpoint` (e.g. http://localhost:4317)."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise SystemExit(f"--otlp-endpoint needs OpenTelemetry: pip install 'tei-jax[otlp]' ({exc})") from None

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    app.extensions["tei_otlp"] = provider  # flushed and shut down with the process
    tracer = provider.get_tracer("tei-jax")
    propagator = TraceContextTextMapPropagator()

    @app.before_request
    def _start_span():
        parent = propagator.extract(carrier={k.lower(): v for k, v in request.headers.items()})
        span = tracer.start_span(f"{request.method} {request.path}", context=parent,
                                 kind=trace.SpanKind.SERVER,
                                 attributes={"http.method": request.method, "http.target": request.path})
        g.otel_span = span

    @app.teardown_request
    def _end_span(_exc):
        span = g.pop("otel_span", None)
        if span is not None:
            span.end()

    @app.after_request
    def _status(response):
        span = g.get("otel_span")
        if span is not None:
            span.set_attribute("http.status_code", response.status_code)
        return response

    log.info("OpenTelemetry traces go to %s as %s", endpoint, service_name)
