"""/api-doc/openapi.json, generated from the pydantic models, and /docs, a Swagger UI served
from the `swagger-ui-bundle` package's files (no network needed)."""

from __future__ import annotations

import functools
from pathlib import Path

import orjson
from flask import Blueprint, Response, abort, send_from_directory
from pydantic.json_schema import models_json_schema

from . import schemas
from .routes import ROUTES

bp = Blueprint("docs", __name__)
REF = "#/components/schemas/{model}"
PUBLIC = {"/health", "/ping", "/metrics"}

_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>tei-jax API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/api-doc/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});
</script></body></html>
"""


def _error_response(description: str, openai: bool = False) -> dict:
    name = "OpenAIErrorResponse" if openai else "ErrorResponse"
    return {"description": description, "content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}}}


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict:
    """The OpenAPI 3.0 document of every route."""
    from tei_jax import __version__

    models = {m for pair in ROUTES.values() for m in pair[:2] if m is not None}
    models |= {schemas.ErrorResponse, schemas.OpenAIErrorResponse}
    _, top = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                ref_template=REF)
    components = top.get("$defs", {})
    paths: dict = {}
    for (method, path), (request_model, response_model, summary) in ROUTES.items():
        openai = path in ("/v1/embeddings", "/embeddings")
        operation: dict = {"summary": summary, "tags": ["Text Embeddings Inference"],
                           "operationId": f"{method}_{path.strip('/').replace('/', '_') or 'root'}"}
        if request_model is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(model=request_model.__name__)}}}}
        elif method == "post":
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": REF.format(model=m)} for m in
                          ("EmbedRequest", "EmbedSparseRequest", "PredictRequest", "RerankRequest",
                           "SimilarityRequest")]}}}}
        ok: dict = {"description": "OK"}
        if response_model is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": REF.format(model=response_model.__name__)}}}
        elif path == "/metrics":
            ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
        responses = {"200": ok}
        if method == "post":
            responses.update({
                "400": _error_response("Empty input", openai),
                "413": {"description": "Payload larger than --payload-limit"},
                "422": _error_response("Validation or tokenizer error", openai),
                "424": _error_response("Wrong model type or inference error", openai),
                "429": _error_response("Model is overloaded", openai),
                "503": _error_response("Model is not ready", openai),
            })
        elif path not in PUBLIC and path != "/":
            responses["503"] = _error_response("Model is not ready")
        else:
            responses["503"] = _error_response("Unhealthy")
        operation["responses"] = responses
        paths.setdefault(path, {})[method] = operation
    paths["/docs"] = {"get": {"summary": "Swagger UI", "responses": {"200": {"description": "HTML"}}}}
    paths["/api-doc/openapi.json"] = {"get": {"summary": "This document",
                                              "responses": {"200": {"description": "OpenAPI JSON"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Text Embeddings Inference (tei-jax)", "version": __version__,
                 "description": "text-embeddings-inference's HTTP API on a JAX engine",
                 "license": {"name": "Apache 2.0"}},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@bp.get("/api-doc/openapi.json")
def openapi_json():
    return Response(orjson.dumps(openapi_document()), mimetype="application/json")


def swagger_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@bp.get("/docs")
@bp.get("/docs/")
def docs_index():
    return Response(_INDEX, mimetype="text/html")


@bp.get("/docs/<path:name>")
def docs_file(name: str):
    if name in ("index.html", "swagger-initializer.js"):
        abort(404)  # ours replaces them (theirs point at the petstore)
    return send_from_directory(swagger_dir(), name)
