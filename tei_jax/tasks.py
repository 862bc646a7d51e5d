"""Closed sets of what a model is and does, and the one table of which operations it serves.

`ModelKind` is decided once from the model folder (config.py, TEI's rule). From it and the
pooling, `operations_for` says which of TEI's operations a model serves (the first one is what
TEI's default route `POST /` runs), and `tasks_for` which compiled programs (`Task`) the engine
builds for them. `refusal` is TEI's error text for an operation a model does not serve. The
engine, `Model` and the server all ask here; none decides on its own.
"""

from __future__ import annotations

import enum


class ModelKind(str, enum.Enum):
    """What a model folder is (TEI: `*ForSequenceClassification` with one label reranks)."""

    EMBEDDING = "embedding"
    CLASSIFIER = "classifier"
    RERANKER = "reranker"

    def __str__(self) -> str:
        return self.value


class Task(str, enum.Enum):
    """One compiled program of the engine: what a batch computes."""

    EMBED = "embed"  # pooled vectors (SPLADE: sparse vocabulary weights)
    EMBED_ALL = "embed_all"  # per-token hidden states
    PREDICT = "predict"  # classifier logits

    def __str__(self) -> str:
        return self.value


class Operation(str, enum.Enum):
    """TEI's model operations (routes and `Model` methods of the same names)."""

    EMBED = "embed"
    EMBED_ALL = "embed_all"
    EMBED_SPARSE = "embed_sparse"
    SIMILARITY = "similarity"
    PREDICT = "predict"
    RERANK = "rerank"

    def __str__(self) -> str:
        return self.value


# The program each operation runs.
OPERATION_TASK = {
    Operation.EMBED: Task.EMBED,
    Operation.EMBED_ALL: Task.EMBED_ALL,
    Operation.EMBED_SPARSE: Task.EMBED,
    Operation.SIMILARITY: Task.EMBED,
    Operation.PREDICT: Task.PREDICT,
    Operation.RERANK: Task.PREDICT,
}


def operations_for(kind: ModelKind | str, pooling: str | None) -> tuple[Operation, ...]:
    """The operations a model serves, the default one (TEI's `POST /`) first."""
    kind = ModelKind(kind)
    if kind is ModelKind.RERANKER:
        return (Operation.RERANK, Operation.PREDICT)
    if kind is ModelKind.CLASSIFIER:
        return (Operation.PREDICT,)
    if pooling == "splade":
        return (Operation.EMBED_SPARSE, Operation.EMBED, Operation.SIMILARITY)
    return (Operation.EMBED, Operation.EMBED_ALL, Operation.SIMILARITY)


def tasks_for(kind: ModelKind | str, pooling: str | None) -> tuple[Task, ...]:
    """The engine programs those operations need, in a stable order."""
    needed = {OPERATION_TASK[op] for op in operations_for(kind, pooling)}
    return tuple(task for task in Task if task in needed)


def refusal(operation: Operation, kind: ModelKind | str, pooling: str | None) -> str:
    """TEI's message when a model does not serve `operation` (a Backend error, 424)."""
    kind = ModelKind(kind)
    if operation is Operation.RERANK:
        return "model is not a re-ranker model"
    if operation is Operation.PREDICT:
        return "Model is not a classifier model"
    if kind is not ModelKind.EMBEDDING:
        return "Model is not an embedding model"
    if operation is Operation.EMBED_SPARSE:
        return "Model is not an embedding model with SPLADE pooling"
    return f"`{operation.value}` is not available for SPLADE models"
