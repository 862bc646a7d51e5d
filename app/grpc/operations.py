"""What each tei.v1 method asks of the server, on the pieces the HTTP routes use.

The model's prepare_*/finish_* carry TEI's validation, truncation, prompts, dimensions,
normalisation, sorting and model-type rules; the `Service` carries the tokenizer threads,
the batching scheduler, the permits and the metrics. A gRPC message holds one input, so each
function here is one TEI operation on one input (rerank: one query and its texts). They know
nothing of gRPC; `calls.py` turns their values and errors into messages and statuses.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager
from typing import Callable, Sequence

import numpy as np

from tei_jax.engine import EMBED, EMBED_ALL, PREDICT
from tei_jax.errors import EmptyInputError, UnhealthyError

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

    def infer(self, task: str, items) -> list[np.ndarray]:
        self.inferring = True
        return [r.output for r in self.service.infer(task, items, self.timings, client_gone=self.client_gone)]

    def tokenize(self, prepare: Callable[[], list]) -> list:
        return self.service.tokenize(self.timings, prepare)


def embed(call: Call, text: str, *, truncate: bool, normalize: bool, truncation_direction: str,
          prompt_name: str | None, dimensions: int | None) -> np.ndarray:
    """One pooled embedding (float32 [d])."""
    service = call.service
    model = service.require_ready()
    with call.permits():
        items = call.tokenize(lambda: model.prepare_embed(
            text, normalize=normalize, truncate=truncate, truncation_direction=truncation_direction,
            prompt_name=prompt_name, dimensions=dimensions))
        service.metrics.embed_count.inc(len(items))
        outputs = call.infer(EMBED, items)
    vector = model.finish_embed(outputs, normalize, dimensions, items)[0]
    service.metrics.embed_success.inc(len(items))
    service.metrics.embed_duration.observe(time.perf_counter() - call.timings.start)
    return vector


def embed_sparse(call: Call, text: str, *, truncate: bool, truncation_direction: str,
                 prompt_name: str | None) -> list[dict]:
    """One SPLADE vector as TEI's [{index, value}] (non-zero entries)."""
    model = call.service.require_ready()
    with call.permits():
        items = call.tokenize(lambda: model.prepare_embed_sparse(
            text, truncate=truncate, truncation_direction=truncation_direction, prompt_name=prompt_name))
        outputs = call.infer(EMBED, items)
    return model.finish_embed_sparse(outputs)[0]


def embed_all(call: Call, text: str, *, truncate: bool, truncation_direction: str,
              prompt_name: str | None) -> np.ndarray:
    """Per-token hidden states of one input (float32 [tokens, hidden])."""
    model = call.service.require_ready()
    with call.permits():
        items = call.tokenize(lambda: model.prepare_embed_all(
            text, truncate=truncate, truncation_direction=truncation_direction, prompt_name=prompt_name))
        outputs = call.infer(EMBED_ALL, items)
    return outputs[0]


def predict(call: Call, inputs: str | Sequence[str], *, truncate: bool, raw_scores: bool,
            truncation_direction: str) -> list[dict]:
    """Scores of one text or one pair, best first: [{score, label}]."""
    service = call.service
    model = service.require_ready()
    with call.permits():
        items = call.tokenize(lambda: model.prepare_predict(
            inputs, truncate=truncate, truncation_direction=truncation_direction)[0])
        service.metrics.predict_count.inc(len(items))
        outputs = call.infer(PREDICT, items)
    scores = model.finish_predict(outputs, raw_scores)[0]
    service.metrics.predict_success.inc(len(items))
    service.metrics.predict_duration.observe(time.perf_counter() - call.timings.start)
    return scores


def rerank(call: Call, query: str, texts: Sequence[str], *, truncate: bool, raw_scores: bool,
           return_text: bool, truncation_direction: str) -> list[dict]:
    """Ranks of texts against a query, best first: [{index, score, text?}]."""
    service = call.service
    model = service.require_ready()
    if not texts:  # TEI: empty, then the model type, then the batch size
        raise EmptyInputError("`texts` cannot be empty")
    model.require_classifier(reranker=True)
    limit = service.settings.max_client_batch_size
    if len(texts) > limit:
        call.batch_size_error = True
        raise batch_size_error(len(texts), limit)
    with call.permits(len(texts)):
        items = call.tokenize(lambda: model.prepare_rerank(
            query, texts, truncate=truncate, truncation_direction=truncation_direction))
        call.timings.chars = len(query) * len(texts) + sum(len(t) for t in texts)
        service.metrics.predict_count.inc(len(items))
        outputs = call.infer(PREDICT, items)
    ranks = model.finish_rerank(outputs, texts, raw_scores, return_text)
    service.metrics.predict_success.inc(len(items))
    return ranks


def tokenize(call: Call, text: str, *, add_special_tokens: bool, prompt_name: str | None) -> list[dict]:
    """TEI's tokens of one text: [{id, text, special, start, stop}]."""
    return call.service.require_ready().tokenize(text, add_special_tokens, prompt_name)[0]


def decode(call: Call, ids: Sequence[int], *, skip_special_tokens: bool) -> str:
    model = call.service.require_ready()
    if len(ids) == 0:
        raise EmptyInputError("`input_ids` cannot be empty")
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
    are ranked together by `finish_rerank` (the same scoring and sorting as `rerank`)."""
    service = call.service
    model = service.require_ready()
    model.require_classifier(reranker=True)
    with call.permits():
        items = call.tokenize(lambda: model.prepare_rerank(
            query, [text], truncate=truncate, truncation_direction=truncation_direction))
        call.timings.chars = len(query) + len(text)
        service.metrics.predict_count.inc(len(items))
        outputs = call.infer(PREDICT, items)
    service.metrics.predict_success.inc(len(items))
    return outputs[0]


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
    return model.finish_rerank(outputs, texts, raw_scores, return_text)
