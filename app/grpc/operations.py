"""What each tei.v1 method asks of the server, on the pieces the HTTP routes use.

The served model's operations (`model.embed(...)`, the same methods the HTTP routes and a
notebook call) carry TEI's validation, truncation, prompts, dimensions, normalisation,
sorting and model-type rules, and run through the batching scheduler; the `Service` carries
the permits and the metrics. A gRPC message holds one input, so each function here is one TEI
operation on one input (rerank: one query and its texts). They know nothing of gRPC;
`calls.py` turns their values and errors into messages and statuses.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from typing import Callable, Sequence

import numpy as np

from tei_jax import inputs
from tei_jax.errors import BackendError, UnhealthyError
from tei_jax.executor import Call as ModelCall
from tei_jax.tasks import ModelKind, Operation

from ..errors import batch_size_error
from ..service import Service, Timings


@dataclasses.dataclass
class Call:
    """One request's (or one stream message's) state: its timings, how it takes permits, and
    whether it got as far as inference (a Backend error before that is a model-type error)."""

    service: Service
    timings: Timings
    wait_for_permits: bool = False  # streams wait for a permit per message; unary calls refuse
    client_gone: Callable[[], bool] | None = None  # queued items are withdrawn once it is true
    inferring: bool = False
    batch_size_error: bool = False

    def permits(self, count: int = 1) -> AbstractContextManager:
        permits = self.service.permits
        return permits.wait_acquire(count) if self.wait_for_permits else permits.acquire(count)

    def model_call(self) -> ModelCall:
        """The `Call` handed to one model operation (it watches the client)."""
        return ModelCall(gone=self.client_gone)

    def done(self, model_call: ModelCall) -> None:
        """Take in a model call's sizes and timings (also after a failure)."""
        self.inferring = self.inferring or model_call.ran
        self.timings.add(model_call)


class RerankRefusal(BackendError):
    """TEI's gRPC Rerank checks the model type itself and words it bare (an embedding model is
    "not a classifier model" there), where its HTTP route and core say "Backend error: ..."."""

    prefix = ""


def require_reranker(model) -> None:
    """Raise TEI's gRPC refusal unless `model` reranks."""
    if Operation.RERANK not in model.operations:
        raise RerankRefusal("model is not a classifier model" if model.kind is ModelKind.EMBEDDING
                            else "model is not a re-ranker model")


def _run(call: Call, family: str | None, operation: Callable[[ModelCall], object], permits: int = 1):
    """Permits, then one model operation with its metrics; the answer."""
    model_call = call.model_call()
    try:
        with call.permits(permits), call.service.counted(family, model_call, call.timings.start):
            return operation(model_call)
    finally:
        call.done(model_call)


def embed(call: Call, text: str, *, truncate: bool, normalize: bool, truncation_direction: str,
          prompt_name: str | None, dimensions: int | None) -> np.ndarray:
    """One pooled embedding (float32 [d])."""
    model = call.service.require_ready()
    return _run(call, "embed", lambda c: model.embed(
        text, normalize=normalize, truncate=truncate, truncation_direction=truncation_direction,
        prompt_name=prompt_name, dimensions=dimensions, call=c))[0]


def embed_sparse(call: Call, text: str, *, truncate: bool, truncation_direction: str,
                 prompt_name: str | None) -> list[dict]:
    """One SPLADE vector as TEI's [{index, value}] (non-zero entries)."""
    model = call.service.require_ready()
    return _run(call, "embed", lambda c: model.embed_sparse(
        text, truncate=truncate, truncation_direction=truncation_direction, prompt_name=prompt_name, call=c))[0]


def embed_all(call: Call, text: str, *, truncate: bool, truncation_direction: str,
              prompt_name: str | None) -> np.ndarray:
    """Per-token hidden states of one input (float32 [tokens, hidden])."""
    model = call.service.require_ready()
    return _run(call, "embed", lambda c: model.embed_all(
        text, truncate=truncate, truncation_direction=truncation_direction, prompt_name=prompt_name, call=c))[0]


def predict(call: Call, inputs: str | Sequence[str], *, truncate: bool, raw_scores: bool,
            truncation_direction: str) -> list[dict]:
    """Scores of one text or one pair, best first: [{score, label}]."""
    model = call.service.require_ready()
    return _run(call, "predict", lambda c: model.predict(
        inputs, raw_scores=raw_scores, truncate=truncate, truncation_direction=truncation_direction, call=c))


def rerank(call: Call, query: str, texts: Sequence[str], *, truncate: bool, raw_scores: bool,
           return_text: bool, truncation_direction: str) -> list[dict]:
    """Ranks of texts against a query, best first: [{index, score, text?}]."""
    service = call.service
    model = service.require_ready()
    size = inputs.rerank_batch(query, texts).size  # TEI: empty, then the model type, then the batch size
    require_reranker(model)
    limit = service.settings.max_client_batch_size
    if size > limit:
        call.batch_size_error = True
        raise batch_size_error(size, limit)
    return _run(call, "predict", lambda c: model.rerank(
        query, texts, raw_scores=raw_scores, return_text=return_text, truncate=truncate,
        truncation_direction=truncation_direction, call=c), permits=size)


def tokenize(call: Call, text: str, *, add_special_tokens: bool, prompt_name: str | None) -> list[dict]:
    """TEI's tokens of one text: [{id, text, special, start, stop}]."""
    return call.service.require_ready().tokenize(text, add_special_tokens, prompt_name)[0]


def decode(call: Call, ids: Sequence[int], *, skip_special_tokens: bool) -> str:
    model = call.service.require_ready()
    inputs.ids_batch(list(ids))
    return model.decode(list(ids), skip_special_tokens)[0]


def info(call: Call) -> dict:
    """/info's facts (the model's and the server's limits)."""
    service = call.service
    model = service.model
    if model is None:
        raise UnhealthyError(f"the model is {service.state}")
    settings = service.settings
    return {**model.info, "max_concurrent_requests": settings.max_concurrent_requests,
            "max_client_batch_size": settings.max_client_batch_size,
            "tokenization_workers": settings.tokenization_workers, "kind": model.kind}


def rerank_pair(call: Call, query: str, text: str, *, truncate: bool, truncation_direction: str) -> np.ndarray:
    """One (query, text) pair's raw output, for RerankStream: its messages run one by one and
    are ranked together by `rank_pairs` (the model's `rank`, the same scoring and sorting as
    `rerank`)."""
    model = call.service.require_ready()
    require_reranker(model)
    [rank] = _run(call, "predict", lambda c: model.rerank(
        query, [text], raw_scores=True, truncate=truncate, truncation_direction=truncation_direction, call=c))
    return np.array([rank["score"]], dtype=np.float32)


def rank_pairs(call: Call, outputs: Sequence[np.ndarray], texts: Sequence[str], parts: Sequence[Timings], *,
               raw_scores: bool, return_text: bool) -> list[dict]:
    """RerankStream's answer: the pairs' outputs ranked, and the call's timings as TEI sums
    them (characters and tokens added up, the phase times averaged)."""
    model = call.service.require_ready()
    timings = call.timings
    timings.chars = sum(p.chars for p in parts)
    timings.tokens = sum(p.tokens for p in parts)
    for phase in ("tokenization", "queue", "inference"):
        setattr(timings, phase, sum(getattr(p, phase) for p in parts) / max(1, len(parts)))
    return model.rank(outputs, texts, raw_scores, return_text)
