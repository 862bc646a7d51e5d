"""tei.v1 messages <-> the plain values of `operations`: proto3's unset fields become HTTP's
defaults (normalize -> true, an unset prompt or dimension -> None) and results become messages."""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np

from ..service import Timings
from .proto import tei_pb2 as pb

DIRECTIONS = {pb.TRUNCATION_DIRECTION_RIGHT: "right", pb.TRUNCATION_DIRECTION_LEFT: "left"}
MODEL_TYPES = {"embedding": pb.MODEL_TYPE_EMBEDDING, "classifier": pb.MODEL_TYPE_CLASSIFIER,
               "reranker": pb.MODEL_TYPE_RERANKER}
NS = 1_000_000_000


def optional(message, field: str):
    """A proto3 `optional` field's value, or None when unset."""
    return getattr(message, field) if message.HasField(field) else None


def direction(message) -> str:
    """The truncation side; an enum value this server does not know is refused by the model
    (`normalize_direction`) like a bad HTTP value."""
    return DIRECTIONS.get(message.truncation_direction, str(message.truncation_direction))


def metadata(timings: Timings) -> pb.Metadata:
    """The body's Metadata: the same figures as the x-* headers, in nanoseconds."""
    return pb.Metadata(
        compute_chars=timings.chars, compute_tokens=timings.tokens,
        total_time_ns=int((time.perf_counter() - timings.start) * NS),
        tokenization_time_ns=int(timings.tokenization * NS), queue_time_ns=int(timings.queue * NS),
        inference_time_ns=int(timings.inference * NS))


def embed_response(vector: np.ndarray, timings: Timings) -> pb.EmbedResponse:
    return pb.EmbedResponse(embeddings=vector.tolist(), metadata=metadata(timings))


def sparse_response(entries: Sequence[dict], timings: Timings) -> pb.EmbedSparseResponse:
    values = [pb.SparseValue(index=int(e["index"]), value=float(e["value"])) for e in entries]
    return pb.EmbedSparseResponse(sparse_embeddings=values, metadata=metadata(timings))


def embed_all_response(states: np.ndarray, timings: Timings) -> pb.EmbedAllResponse:
    tokens = [pb.TokenEmbedding(embeddings=row) for row in np.asarray(states).tolist()]
    return pb.EmbedAllResponse(token_embeddings=tokens, metadata=metadata(timings))


def predict_response(scores: Sequence[dict], timings: Timings) -> pb.PredictResponse:
    predictions = [pb.Prediction(score=s["score"], label=s["label"]) for s in scores]
    return pb.PredictResponse(predictions=predictions, metadata=metadata(timings))


def rerank_response(ranks: Sequence[dict], timings: Timings) -> pb.RerankResponse:
    return pb.RerankResponse(ranks=[pb.Rank(**rank) for rank in ranks], metadata=metadata(timings))


def encode_response(tokens: Sequence[dict]) -> pb.EncodeResponse:
    return pb.EncodeResponse(tokens=[pb.SimpleToken(**{k: v for k, v in t.items() if v is not None})
                                     for t in tokens])


def info_response(facts: dict) -> pb.InfoResponse:
    from tei_jax import __version__

    optional_values = {"sha": os.environ.get("TEI_JAX_GIT_SHA"), "docker_label": os.environ.get("DOCKER_LABEL"),
                       "model_sha": facts["model_sha"], "max_batch_requests": facts["max_batch_requests"]}
    return pb.InfoResponse(
        version=__version__, model_id=facts["model_id"], model_dtype=facts["model_dtype"],
        model_type=MODEL_TYPES[facts["kind"]], max_concurrent_requests=facts["max_concurrent_requests"],
        max_input_length=facts["max_input_length"], max_batch_tokens=facts["max_batch_tokens"],
        max_client_batch_size=facts["max_client_batch_size"],
        tokenization_workers=facts["tokenization_workers"],
        **{k: v for k, v in optional_values.items() if v is not None})
