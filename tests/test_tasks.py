"""Which operations and engine programs each kind of model has, and TEI's refusals."""

import pytest

from tei_jax.tasks import ModelKind, Operation, Task, operations_for, refusal, tasks_for


def test_operations_and_tasks_by_kind():
    assert operations_for("embedding", "mean")[0] is Operation.EMBED
    assert operations_for(ModelKind.EMBEDDING, "splade")[0] is Operation.EMBED_SPARSE
    assert operations_for("classifier", None) == (Operation.PREDICT,)
    assert operations_for("reranker", None) == (Operation.RERANK, Operation.PREDICT)
    assert tasks_for("embedding", "cls") == (Task.EMBED, Task.EMBED_ALL)
    assert tasks_for("embedding", "splade") == (Task.EMBED,)
    assert tasks_for("reranker", None) == (Task.PREDICT,)
    with pytest.raises(ValueError):
        operations_for("generator", None)


@pytest.mark.parametrize("operation, kind, pooling, message", [
    (Operation.EMBED, "classifier", None, "Model is not an embedding model"),
    (Operation.EMBED_SPARSE, "embedding", "mean", "Model is not an embedding model with SPLADE pooling"),
    (Operation.EMBED_SPARSE, "reranker", None, "Model is not an embedding model"),
    (Operation.EMBED_ALL, "embedding", "splade", "`embed_all` is not available for SPLADE models"),
    (Operation.PREDICT, "embedding", "mean", "Model is not a classifier model"),
    (Operation.RERANK, "classifier", None, "model is not a re-ranker model"),
])
def test_refusals_are_teis_words(operation, kind, pooling, message):
    assert operation not in operations_for(kind, pooling)
    assert refusal(operation, kind, pooling) == message


def test_enums_compare_as_their_strings():
    assert Task.EMBED == "embed" and {"embed": 1}[Task.EMBED] == 1
    assert str(ModelKind.RERANKER) == "reranker"
