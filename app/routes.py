"""TEI's HTTP routes (contract section 2) on a Flask blueprint.

Each handler parses its body into a pydantic model, takes one concurrency permit per input
item (429 when none are free), tokenizes in this request thread, submits each item to the
batching scheduler on its own, and builds TEI's response with its x-* timing headers.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import orjson
import pydantic
from flask import Blueprint, Response, current_app, g, request

from tei_jax.engine import EMBED, EMBED_ALL, PREDICT
from tei_jax.errors import EmptyInputError, TEIError, UnhealthyError, ValidationError
from tei_jax.model import cosine_to_first

from . import client_watch, schemas
from .errors import FAILURE_LABEL, PlainError, batch_size_error, tei_response
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .service import ClientDisconnected, Service, Timings

log = logging.getLogger("app.routes")
bp = Blueprint("tei", __name__)
UNHEALTHY = orjson.dumps({"error": "unhealthy", "error_type": "Unhealthy"})
CLIENT_CLOSED_REQUEST = 499  # nginx's code for it; nobody reads this response


def service() -> Service:
    return current_app.config["TEI_SERVICE"]


# Serialization -------------------------------------------------------------------------------
def _default(value: Any):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    data = orjson.dumps(body, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(data, status=status, headers=headers, mimetype="application/json")


# Parsing -------------------------------------------------------------------------------------
def parse(model: type[pydantic.BaseModel]) -> Any:
    """The body as `model`, with axum's plain-text refusals (415, 400, 422)."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise PlainError(415, "Expected request with `Content-Type: application/json`")
    data = request.get_data(cache=False)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PlainError(400, f"Failed to parse the request body as JSON: {exc}") from None
    return validate(model, raw)


def validate(model: type[pydantic.BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise PlainError(422, f"Failed to deserialize the JSON body into the target type: {_summary(exc)}") from None


def _summary(exc: pydantic.ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


# The handler wrapper -------------------------------------------------------------------------
def tei_route(openai: bool = False, headers: bool = True) -> Callable:
    """Run a handler that returns (body, Timings | None): TEI errors become TEI's JSON (or
    OpenAI's) with the right status; success adds the timing headers and request metrics."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            g.start = time.perf_counter()
            g.method = "single"
            metrics = service().metrics
            try:
                body, timings = handler(*args, **kwargs)
            except PlainError as exc:
                metrics.request_failure.labels("validation").inc()
                return exc.response()
            except ClientDisconnected:
                # Nobody will read an answer; its queued items were withdrawn (and counted).
                log.info("%s %s: the client went away before its results were ready",
                         request.method, request.path)
                return Response(status=CLIENT_CLOSED_REQUEST)
            except TEIError as exc:
                label = FAILURE_LABEL.get(exc.error_type, "inference")
                if exc.error_type == "Backend" and not g.get("inferring"):
                    label = "model_type"
                if g.get("batch_size_error"):
                    label = "batch_size"
                metrics.request_failure.labels(label).inc()
                if exc.error_type in ("Backend", "Unhealthy") and g.get("inferring"):
                    log.error("%s %s failed: %s", request.method, request.path, exc.message)
                return tei_response(exc, openai=openai)
            if timings is None:
                return json_response(body)
            _observe(metrics, timings)
            return json_response(body, headers=timings.headers() if headers else None)

        return wrapper

    return decorate


def _observe(metrics, timings: Timings) -> None:
    metrics.request_success.labels(g.method).inc()
    metrics.request_duration.observe(time.perf_counter() - timings.start)
    metrics.request_tokenization.observe(timings.tokenization)
    metrics.request_queue.observe(timings.queue)
    metrics.request_inference.observe(timings.inference)


def count_request(size: int, batch: bool) -> None:
    """te_request_count{method}; the batch-size check (422) shared by every route."""
    g.method = "batch" if batch else "single"
    service().metrics.request_count.labels(g.method).inc()
    limit = service().settings.max_client_batch_size
    if size > limit:
        g.batch_size_error = True
        raise batch_size_error(size, limit)


def input_count(inputs) -> tuple[int, bool]:
    """(items, is_batch) of TEI's Input: a string or ONE id list is a single input."""
    if isinstance(inputs, str):
        return 1, False
    if inputs and all(isinstance(x, int) for x in inputs):
        return 1, False
    return len(inputs), True


def infer(task: str, items, timings: Timings):
    g.inferring = True
    return service().infer(task, items, timings, client_gone=client_watch.watcher(request.environ))


# Embeddings ----------------------------------------------------------------------------------
def run_embed(req: schemas.EmbedRequest, kind: str = "embed"):
    """/embed's work: (vectors [n, d], is_batch, timings)."""
    model = service().require_ready()
    timings = Timings(g.start)
    size, batch = input_count(req.inputs)
    count_request(size, batch)
    with service().permits.acquire(size):
        items = service().tokenize(timings, lambda: model.prepare_embed(
            req.inputs, normalize=req.normalize, truncate=req.truncate,
            truncation_direction=req.truncation_direction, prompt_name=req.prompt_name,
            dimensions=req.dimensions))
        service().metrics.embed_count.inc(len(items))
        results = infer(EMBED, items, timings)
    vectors = model.finish_embed([r.output for r in results], req.normalize, req.dimensions, items)
    service().metrics.embed_success.inc(len(items))
    service().metrics.embed_duration.observe(time.perf_counter() - timings.start)
    return vectors, batch, timings


@bp.post("/embed")
@tei_route()
def embed():
    vectors, _, timings = run_embed(parse(schemas.EmbedRequest))
    return vectors, timings


def run_tokens(req, task: str, sparse: bool):
    model = service().require_ready()
    timings = Timings(g.start)
    size, batch = input_count(req.inputs)
    count_request(size, batch)
    prepare = model.prepare_embed_sparse if sparse else model.prepare_embed_all
    with service().permits.acquire(size):
        items = service().tokenize(timings, lambda: prepare(
            req.inputs, truncate=req.truncate, truncation_direction=req.truncation_direction,
            prompt_name=req.prompt_name))
        results = infer(task, items, timings)
    outputs = [r.output for r in results]
    return (model.finish_embed_sparse(outputs) if sparse else outputs), timings


@bp.post("/embed_all")
@tei_route()
def embed_all():
    return run_tokens(parse(schemas.EmbedAllRequest), EMBED_ALL, sparse=False)


@bp.post("/embed_sparse")
@tei_route()
def embed_sparse():
    return run_tokens(parse(schemas.EmbedSparseRequest), EMBED, sparse=True)


@bp.post("/similarity")
@tei_route()
def similarity():
    return run_similarity(parse(schemas.SimilarityRequest))


def run_similarity(req: schemas.SimilarityRequest):
    service().require_ready()
    sentences = req.inputs.sentences
    if not sentences:  # TEI: empty, then batch size, then the model type (in run_embed)
        raise EmptyInputError("`inputs.sentences` cannot be empty")
    params = req.parameters or schemas.SimilarityParameters()
    embed_req = schemas.EmbedRequest(
        inputs=[req.inputs.source_sentence, *sentences], truncate=params.truncate,
        truncation_direction=params.truncation_direction, prompt_name=params.prompt_name, normalize=False)
    vectors, _, timings = run_embed(embed_req)
    return cosine_to_first(vectors), timings


@bp.post("/v1/embeddings")
@bp.post("/embeddings")
@tei_route(openai=True)
def openai_embeddings():
    req = parse(schemas.OpenAICompatRequest)
    name = service().settings.model_name
    if req.model is not None and req.model != name:
        log.warning("request asks for model %r, serving %r", req.model, name)
    embed_req = schemas.EmbedRequest(inputs=req.input, dimensions=req.dimensions, normalize=True)
    vectors, _, timings = run_embed(embed_req)
    if req.encoding_format == "base64":
        data = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = list(vectors)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(data)],
        "model": name,
        "usage": {"prompt_tokens": timings.tokens, "total_tokens": timings.tokens},
    }
    return body, timings


# Classification ------------------------------------------------------------------------------
def run_predict(req: schemas.PredictRequest):
    model = service().require_ready()
    model.require_classifier()
    timings = Timings(g.start)
    inputs = req.inputs
    batch = isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], list)
    size = len(inputs) if batch else 1
    count_request(size, batch)
    with service().permits.acquire(size):
        items = service().tokenize(timings, lambda: model.prepare_predict(
            inputs, truncate=req.truncate, truncation_direction=req.truncation_direction)[0])
        service().metrics.predict_count.inc(len(items))
        results = infer(PREDICT, items, timings)
    scores = model.finish_predict([r.output for r in results], req.raw_scores)
    service().metrics.predict_success.inc(len(items))
    service().metrics.predict_duration.observe(time.perf_counter() - timings.start)
    return (scores if batch else scores[0]), timings


@bp.post("/predict")
@tei_route()
def predict():
    return run_predict(parse(schemas.PredictRequest))


def run_rerank(req: schemas.RerankRequest):
    model = service().require_ready()
    if not req.texts:  # TEI checks this before the model type
        raise EmptyInputError("`texts` cannot be empty")
    model.require_classifier(reranker=True)
    timings = Timings(g.start)
    count_request(len(req.texts), True)
    with service().permits.acquire(len(req.texts)):
        items = service().tokenize(timings, lambda: model.prepare_rerank(
            req.query, req.texts, truncate=req.truncate, truncation_direction=req.truncation_direction))
        timings.chars = len(req.query) * len(req.texts) + sum(len(t) for t in req.texts)
        service().metrics.predict_count.inc(len(items))
        results = infer(PREDICT, items, timings)
    ranks = model.finish_rerank([r.output for r in results], req.texts, req.raw_scores, req.return_text)
    service().metrics.predict_success.inc(len(items))
    return ranks, timings


@bp.post("/rerank")
@tei_route()
def rerank():
    return run_rerank(parse(schemas.RerankRequest))


# Tokens --------------------------------------------------------------------------------------
@bp.post("/tokenize")
@tei_route()
def tokenize():
    req = parse(schemas.TokenizeRequest)
    model = service().require_ready()
    if isinstance(req.inputs, list):
        count_request(len(req.inputs), True)
    else:
        count_request(1, False)
    return model.tokenize(req.inputs, req.add_special_tokens, req.prompt_name), None


@bp.post("/decode")
@tei_route()
def decode():
    req = parse(schemas.DecodeRequest)
    model = service().require_ready()
    if len(req.ids) == 0:
        raise EmptyInputError("`ids` cannot be empty")
    batch = isinstance(req.ids[0], list)
    count_request(len(req.ids) if batch else 1, batch)
    return model.decode(req.ids, req.skip_special_tokens), None


# Default routes ------------------------------------------------------------------------------
def default_task(model) -> str:
    """What POST / does: TEI's rule by model type (and env TASK)."""
    if model.kind == "classifier":
        return "predict"
    if model.kind == "reranker":
        return "rerank"
    if os.environ.get("TASK") == "sentence-similarity":
        return "similarity"
    return "embed_sparse" if model.spec.pooling == "splade" else "embed"


_RUNNERS = {
    "predict": (schemas.PredictRequest, run_predict),
    "rerank": (schemas.RerankRequest, run_rerank),
    "similarity": (schemas.SimilarityRequest, run_similarity),
    "embed_sparse": (schemas.EmbedSparseRequest, lambda req: run_tokens(req, EMBED, sparse=True)),
    "embed": (schemas.EmbedRequest, lambda req: _without_batch_flag(run_embed(req))),
}


def _without_batch_flag(result):
    vectors, _, timings = result
    return vectors, timings


@bp.post("/")
@bp.post("/invocations")
@tei_route()
def default_route():
    model = service().require_ready()
    model_cls, runner = _RUNNERS[default_task(model)]
    return runner(parse(model_cls))


@bp.post("/vertex")
@tei_route(headers=False)
def vertex():
    req = parse(schemas.VertexRequest)
    model = service().require_ready()
    size = sum(_instance_size(instance) for instance in req.instances)
    limit = service().settings.max_client_batch_size
    if size > limit:  # all instances together, or one body could carry thousands of inputs
        g.batch_size_error = True
        raise batch_size_error(size, limit)
    predictions = []
    for instance in req.instances:
        body, _ = _vertex_one(model, instance)
        g.pop("inferring", None)
        predictions.append(body)
    return {"predictions": predictions}, Timings(g.start)


def _instance_size(instance: Any) -> int:
    """How many inputs a vertex instance carries (at least one)."""
    if not isinstance(instance, dict):
        return 1
    if isinstance(instance.get("texts"), list):
        return max(1, len(instance["texts"]))
    inputs = instance.get("inputs")
    if isinstance(inputs, list) and inputs and not all(isinstance(x, int) for x in inputs):
        return len(inputs)
    return 1


def _vertex_one(model, instance: Any):
    try:
        rerank_req = schemas.RerankRequest.model_validate(instance)
    except pydantic.ValidationError:
        rerank_req = None
    if rerank_req is not None:
        return run_rerank(rerank_req)
    task = default_task(model)
    if task in ("rerank", "similarity"):
        task = "predict" if task == "rerank" else "embed"
    model_cls, runner = _RUNNERS[task]
    try:
        req = model_cls.model_validate(instance)
    except pydantic.ValidationError as exc:
        raise ValidationError(_summary(exc)) from None
    return runner(req)


# Facts ---------------------------------------------------------------------------------------
@bp.get("/info")
@tei_route()
def info():
    svc = service()
    model = svc.model
    if model is None:
        raise UnhealthyError(f"the model is {svc.state}")
    s = svc.settings
    facts = model.info
    from tei_jax import __version__

    body = {
        "model_id": facts["model_id"],
        "model_sha": facts["model_sha"],
        "model_dtype": facts["model_dtype"],
        "served_model_name": s.model_name,
        "model_type": facts["model_type"],
        "max_concurrent_requests": s.max_concurrent_requests,
        "max_input_length": facts["max_input_length"],
        "max_batch_tokens": facts["max_batch_tokens"],
        "max_batch_requests": facts["max_batch_requests"],
        "max_client_batch_size": s.max_client_batch_size,
        "auto_truncate": s.auto_truncate,
        "tokenization_workers": s.tokenization_workers,
        "version": __version__,
        "sha": os.environ.get("TEI_JAX_GIT_SHA"),
        "docker_label": os.environ.get("DOCKER_LABEL"),
    }
    return body, None


@bp.get("/health")
@bp.get("/")
@bp.get("/ping")
def health():
    if service().healthy():
        return Response(b"", status=200)
    return Response(UNHEALTHY, status=503, mimetype="application/json")


@bp.get("/metrics")
def metrics():
    svc = service()
    if svc.scheduler is not None:
        svc.metrics.queue_size.set(svc.scheduler.queue_size)
        svc.metrics.compiles_after_warmup.set(svc.scheduler.compiles_since_ready)
    return Response(svc.metrics.exposition(), content_type=METRICS_CONTENT_TYPE)


# Kept importable for the OpenAPI document: route -> (request model, response model, summary).
ROUTES = {
    ("post", "/embed"): (schemas.EmbedRequest, schemas.EmbedResponse, "Get Embeddings"),
    ("post", "/embed_all"): (schemas.EmbedAllRequest, schemas.EmbedAllResponse, "Get all Embeddings without Pooling"),
    ("post", "/embed_sparse"): (schemas.EmbedSparseRequest, schemas.EmbedSparseResponse, "Get Sparse Embeddings"),
    ("post", "/predict"): (schemas.PredictRequest, schemas.PredictResponse, "Get Predictions"),
    ("post", "/rerank"): (schemas.RerankRequest, schemas.RerankResponse, "Get Ranks"),
    ("post", "/similarity"): (schemas.SimilarityRequest, schemas.SimilarityResponse, "Get Sentence Similarity"),
    ("post", "/tokenize"): (schemas.TokenizeRequest, schemas.TokenizeResponse, "Tokenize inputs"),
    ("post", "/decode"): (schemas.DecodeRequest, schemas.DecodeResponse, "Decode input ids"),
    ("post", "/v1/embeddings"): (schemas.OpenAICompatRequest, schemas.OpenAICompatResponse,
                                 "OpenAI compatible route"),
    ("post", "/embeddings"): (schemas.OpenAICompatRequest, schemas.OpenAICompatResponse,
                              "OpenAI compatible route (alias of /v1/embeddings)"),
    ("post", "/vertex"): (schemas.VertexRequest, schemas.VertexResponse, "Vertex AI compatible route"),
    ("post", "/"): (None, None, "Default route: predict, rerank, similarity, embed_sparse or embed by model type"),
    ("post", "/invocations"): (None, None, "SageMaker route (same as POST /)"),
    ("get", "/info"): (None, schemas.Info, "Text Embeddings Inference endpoint info"),
    ("get", "/health"): (None, None, "Health check method"),
    ("get", "/"): (None, None, "Health check (Inference API)"),
    ("get", "/ping"): (None, None, "Health check (SageMaker)"),
    ("get", "/metrics"): (None, None, "Prometheus metrics scrape endpoint"),
}
