"""TEI's HTTP routes (contract section 2) on a Flask blueprint.

A handler is parse -> permits -> one model call -> TEI response: it parses the body into a
pydantic model (schemas.py; TEI's size rules from tei_jax.inputs), checks the client batch
size, takes one concurrency permit per input item (429 when none are free), calls the served
model's operation (`model.embed(...)`, the same method a notebook calls; its executor is the
batching scheduler) with a `Call` that watches the client's socket and collects the timings,
and builds TEI's response with its x-* headers. No inference logic lives here.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import orjson
import pydantic
from flask import Blueprint, Response, copy_current_request_context, current_app, g, request

from tei_jax import inputs
from tei_jax.errors import TEIError, UnhealthyError
from tei_jax.executor import Call, CallWithdrawn
from tei_jax.tasks import Operation

from . import client_watch, json_rejection, schemas
from .errors import FAILURE_LABEL, BareValidationError, PlainError, batch_size_error, tei_response
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .service import Service, Timings

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
# TEI's serde type of each request body, for its wording of a refusal (json_rejection.py).
SHAPES = {
    schemas.EmbedRequest: json_rejection.EMBED, schemas.EmbedAllRequest: json_rejection.EMBED_ALL,
    schemas.EmbedSparseRequest: json_rejection.EMBED_SPARSE, schemas.PredictRequest: json_rejection.PREDICT,
    schemas.RerankRequest: json_rejection.RERANK, schemas.SimilarityRequest: json_rejection.SIMILARITY,
    schemas.OpenAICompatRequest: json_rejection.OPENAI, schemas.TokenizeRequest: json_rejection.TOKENIZE,
    schemas.DecodeRequest: json_rejection.DECODE, schemas.VertexRequest: json_rejection.VERTEX,
}


def parse(model: type[pydantic.BaseModel]) -> Any:
    """The body as `model`, with axum's plain-text refusals (415, 400, 422) in TEI's words."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))):
        raise PlainError(415, "Expected request with `Content-Type: application/json`")
    data = request.get_data(cache=False)
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _refusal(model, data, 400, f"Failed to parse the request body as JSON: {exc}") from None
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise _refusal(model, data, 422, f"Failed to deserialize the JSON body into the target type: "
                                         f"{_summary(exc)}") from None


def _refusal(model: type[pydantic.BaseModel], data: bytes, status: int, fallback: str) -> PlainError:
    """TEI's status and text for a body it would refuse; where serde would take what we do not
    (never seen in the tests against serde's texts), our own words."""
    found = json_rejection.rejection(data, SHAPES[model])
    return PlainError(*found) if found is not None else PlainError(status, fallback)


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
            except CallWithdrawn:
                # Nobody will read an answer; its queued items were withdrawn (and counted).
                log.info("%s %s: the client went away before its results were ready",
                         request.method, request.path)
                return Response(status=CLIENT_CLOSED_REQUEST)
            except TEIError as exc:
                inferring = _ran()
                label = FAILURE_LABEL.get(exc.error_type, "inference")
                if exc.error_type == "Backend" and not inferring:
                    label = "model_type"
                if g.get("batch_size_error"):
                    label = "batch_size"
                metrics.request_failure.labels(label).inc()
                if exc.error_type in ("Backend", "Unhealthy") and inferring:
                    log.error("%s %s failed: %s", request.method, request.path, exc.message)
                return tei_response(exc, openai=openai)
            if timings is None:
                return json_response(body)
            _observe(metrics, timings)
            return json_response(body, headers=timings.headers() if headers else None)

        return wrapper

    return decorate


def _ran() -> bool:
    """Whether this request's inputs reached the device (else a failure is the model type's
    or the input's, not inference's)."""
    return any(call.ran for call in g.get("calls", ()))


def _observe(metrics, timings: Timings) -> None:
    metrics.request_success.labels(g.method).inc()
    metrics.request_duration.observe(time.perf_counter() - timings.start)
    metrics.request_tokenization.observe(timings.tokenization)
    metrics.request_queue.observe(timings.queue)
    metrics.request_inference.observe(timings.inference)


def count_request(size: int, batch: bool) -> None:
    """te_request_count{method}, then the batch-size check."""
    g.method = "batch" if batch else "single"
    service().metrics.request_count.labels(g.method).inc()
    check_batch_size(size)


def check_batch_size(size: int) -> None:
    """The batch-size check (422) shared by every route."""
    limit = service().settings.max_client_batch_size
    if size > limit:
        g.batch_size_error = True
        raise batch_size_error(size, limit)


def new_call() -> Call:
    """A `Call` for one model call of this request: it notices a client that hangs up."""
    # One watcher per request: /vertex runs its instances' calls on several threads at once.
    watch = request.environ.setdefault("tei_jax.client_watch", client_watch.watcher(request.environ))
    call = Call(gone=watch)
    g.setdefault("calls", []).append(call)
    return call


def answered(call: Call) -> Timings:
    """The request's Timings once its model call answered."""
    timings = service().timings(g.start)
    timings.add(call)
    return timings


# Operations ----------------------------------------------------------------------------------
# Each takes its parsed request and returns (TEI body, Timings); the routes, POST / and
# /vertex share them. Checks run in TEI's order: empty, model type (predict/rerank), client
# batch size, permits, then the model call (options, tokenization, inference).
def do_embed(req: schemas.EmbedRequest):
    model = service().require_ready()
    size, batch = inputs.embed_size(req.inputs)
    count_request(size, batch)
    call = new_call()
    with service().permits.acquire(size), service().counted("embed", call, g.start):
        vectors = model.embed(req.inputs, normalize=req.normalize, truncate=req.truncate,
                              truncation_direction=req.truncation_direction, prompt_name=req.prompt_name,
                              dimensions=req.dimensions, call=call)
    return vectors, answered(call)


def do_embed_all(req: schemas.EmbedAllRequest):
    model = service().require_ready()
    size, batch = inputs.embed_size(req.inputs)
    count_request(size, batch)
    call = new_call()
    with service().permits.acquire(size), service().counted("embed", call, g.start):
        states = model.embed_all(req.inputs, truncate=req.truncate, truncation_direction=req.truncation_direction,
                                 prompt_name=req.prompt_name, call=call)
    return states, answered(call)


def do_embed_sparse(req: schemas.EmbedSparseRequest):
    model = service().require_ready()
    size, batch = inputs.embed_size(req.inputs)
    count_request(size, batch)
    call = new_call()
    with service().permits.acquire(size), service().counted("embed", call, g.start):
        entries = model.embed_sparse(req.inputs, truncate=req.truncate, truncation_direction=req.truncation_direction,
                                     prompt_name=req.prompt_name, call=call)
    return entries, answered(call)


def do_similarity(req: schemas.SimilarityRequest):
    model = service().require_ready()
    sentences = req.inputs.sentences
    size = inputs.similarity_batch(req.inputs.source_sentence, sentences).size
    count_request(size, True)
    params = req.parameters or schemas.SimilarityParameters()
    call = new_call()
    with service().permits.acquire(size), service().counted("embed", call, g.start):
        scores = model.similarity(req.inputs.source_sentence, sentences, truncate=params.truncate,
                                  truncation_direction=params.truncation_direction, prompt_name=params.prompt_name,
                                  call=call)
    return np.asarray(scores, dtype=np.float32), answered(call)


def do_predict(req: schemas.PredictRequest):
    model = service().require_ready()
    size, batch = inputs.predict_size(req.inputs)
    count_request(size, batch)  # TEI: the batch size before the model type (model.predict checks it)
    call = new_call()
    with service().permits.acquire(size), service().counted("predict", call, g.start):
        scores = model.predict(req.inputs, raw_scores=req.raw_scores, truncate=req.truncate,
                               truncation_direction=req.truncation_direction, call=call)
    return scores, answered(call)


def do_rerank(req: schemas.RerankRequest):
    model = service().require_ready()
    size = inputs.rerank_batch(req.query, req.texts).size  # TEI: empty before the model type
    model.require(Operation.RERANK)
    count_request(size, True)
    call = new_call()
    with service().permits.acquire(size), service().counted("predict", call, g.start):
        ranks = model.rerank(req.query, req.texts, raw_scores=req.raw_scores, return_text=req.return_text,
                             truncate=req.truncate, truncation_direction=req.truncation_direction, call=call)
    return ranks, answered(call)


OPERATIONS: dict[Operation, tuple[type[pydantic.BaseModel], Callable]] = {
    Operation.EMBED: (schemas.EmbedRequest, do_embed),
    Operation.EMBED_ALL: (schemas.EmbedAllRequest, do_embed_all),
    Operation.EMBED_SPARSE: (schemas.EmbedSparseRequest, do_embed_sparse),
    Operation.SIMILARITY: (schemas.SimilarityRequest, do_similarity),
    Operation.PREDICT: (schemas.PredictRequest, do_predict),
    Operation.RERANK: (schemas.RerankRequest, do_rerank),
}


def _route(operation: Operation) -> Callable:
    def handler():
        model_cls, run = OPERATIONS[operation]
        return run(parse(model_cls))

    handler.__name__ = operation.value
    return tei_route()(handler)


for _operation in Operation:
    bp.add_url_rule(f"/{_operation.value}", view_func=_route(_operation), methods=["POST"])


@bp.post("/v1/embeddings")
@bp.post("/embeddings")
@tei_route(openai=True)
def openai_embeddings():
    req = parse(schemas.OpenAICompatRequest)
    name = service().settings.model_name
    if req.model is not None and req.model != name:
        log.warning("request asks for model %r, serving %r", req.model, name)
    vectors, timings = do_embed(schemas.EmbedRequest(inputs=req.input, dimensions=req.dimensions, normalize=True))
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


# Tokens --------------------------------------------------------------------------------------
@bp.post("/tokenize")
@tei_route()
def tokenize():
    req = parse(schemas.TokenizeRequest)
    model = service().require_ready()
    check_batch_size(_tokenize_size(req.inputs))  # TEI counts no te_request_count here
    return model.tokenize(req.inputs, req.add_special_tokens, req.prompt_name), None


def _tokenize_size(texts) -> int:
    return len(texts) if isinstance(texts, list) else 1


@bp.post("/decode")
@tei_route()
def decode():
    req = parse(schemas.DecodeRequest)
    model = service().require_ready()
    check_batch_size(inputs.ids_batch(req.ids).size)  # TEI counts no te_request_count here
    return model.decode(req.ids, req.skip_special_tokens), None


# Default routes ------------------------------------------------------------------------------
def default_operation(model) -> Operation:
    """What POST / does: TEI's rule by model type (the model's first operation), and env
    TASK=sentence-similarity for embedding models."""
    if Operation.SIMILARITY in model.operations and os.environ.get("TASK") == "sentence-similarity":
        return Operation.SIMILARITY
    return model.operations[0]


@bp.post("/")
@bp.post("/invocations")
@tei_route()
def default_route():
    model = service().require_ready()
    model_cls, run = OPERATIONS[default_operation(model)]
    return run(parse(model_cls))


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
    # Every instance is read before any runs, as TEI builds every instance's future first.
    runs = [_vertex_one(model, instance) for instance in req.instances]
    return {"predictions": _run_together(runs)}, None


def _run_together(runs: list[tuple[Callable, pydantic.BaseModel]]) -> list[Any]:
    """Every vertex instance's handler at once, as TEI joins all their futures: their inputs
    wait in the scheduler's queue together and share batches. Each instance is a request of
    its own (counted, permitted, observed, as TEI calls its handler); all are waited for, then
    the first failure in instance order is raised (TEI collects the joined results in order)."""
    start = g.start

    def one(run: Callable, instance_req: pydantic.BaseModel):
        g.start = start
        try:
            body, timings = run(instance_req)
            _observe(service().metrics, timings)
            return body, None, g.get("calls", []), False
        except Exception as exc:  # handed to the request's thread, raised there in order
            return None, exc, g.get("calls", []), bool(g.get("batch_size_error"))

    if len(runs) <= 1:  # nothing to run beside it (TEI answers no instances with no predictions)
        outcomes = [one(*run) for run in runs]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(runs), thread_name_prefix="vertex") as pool:
            futures = [pool.submit(copy_current_request_context(one), *run) for run in runs]
            outcomes = [future.result() for future in futures]
    for _, _, calls, _ in outcomes:
        g.setdefault("calls", []).extend(call for call in calls if call not in g.calls)
    for _, exc, _, batch_size_error in outcomes:
        if exc is not None:
            g.batch_size_error = batch_size_error
            raise exc
    return [body for body, _, _, _ in outcomes]


def _instance_size(instance: Any) -> int:
    """How many inputs a vertex instance carries (at least one)."""
    if not isinstance(instance, dict):
        return 1
    if isinstance(instance.get("texts"), list):
        return max(1, len(instance["texts"]))
    return max(1, inputs.embed_size(instance.get("inputs"))[0])


def _vertex_one(model, instance: Any) -> tuple[Callable, pydantic.BaseModel]:
    """The handler and request of one vertex instance: a rerank body if it reads as one, else
    the request of the model's own operation, refused (422) in serde's words as TEI does."""
    try:
        return do_rerank, schemas.RerankRequest.model_validate(instance)
    except pydantic.ValidationError:
        pass
    operation = default_operation(model)
    if operation in (Operation.RERANK, Operation.SIMILARITY):
        operation = Operation.PREDICT if operation is Operation.RERANK else Operation.EMBED
    model_cls, run = OPERATIONS[operation]
    try:
        return run, model_cls.model_validate(instance)
    except pydantic.ValidationError as exc:
        text = json_rejection.value_rejection(instance, SHAPES[model_cls])
        raise BareValidationError(text if text is not None else _summary(exc)) from None


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
        # Ours, beyond TEI's fields: where the model runs.
        "sharding": model.sharding_info,
    }
    return body, None


@bp.get("/health")
@bp.get("/")
@bp.get("/ping")
def health():
    if service().healthy():
        return bare_response(200)  # TEI answers `()`: no body, no Content-Type
    return Response(UNHEALTHY, status=503, mimetype="application/json")


def bare_response(status: int) -> Response:
    """An empty response without a Content-Type, as axum sends `()`, 401, 404 and 405."""
    response = Response(b"", status=status)
    del response.headers["Content-Type"]
    return response


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
