"""TEI's error texts, decided by type: the core's errors carry their type's prefix, the
handlers' own checks (empty lists of texts, the client batch size, a NaN score) do not."""

from __future__ import annotations

import pytest

from app.errors import BareValidationError, batch_size_error
from app.grpc.operations import RerankRefusal
from tei_jax.errors import (BackendError, EmptyBatchError, EmptyInputError, NaNScoreError, OverloadedError,
                            TokenizerError, UnhealthyError, ValidationError)
from tei_jax.tokenization import rust_list


@pytest.mark.parametrize("error, text", [
    (BackendError("Model is not an embedding model"), "Backend error: Model is not an embedding model"),
    (BackendError("model is not a re-ranker model"), "Backend error: model is not a re-ranker model"),
    (ValidationError("`dimensions` should be positive"), "Input validation error: `dimensions` should be positive"),
    (EmptyInputError("`inputs` cannot be empty"), "Input validation error: `inputs` cannot be empty"),
    (EmptyBatchError("`texts` cannot be empty"), "`texts` cannot be empty"),
    (TokenizerError("boom"), "tokenizer error boom"),
    (batch_size_error(33, 32), "batch size 33 > maximum allowed batch size 32"),
    (BareValidationError("missing field `inputs`"), "missing field `inputs`"),
    (NaNScoreError("score is NaN"), "score is NaN"),
    (RerankRefusal("model is not a classifier model"), "model is not a classifier model"),
    (OverloadedError("Model is overloaded"), "Model is overloaded"),
    (UnhealthyError("unhealthy"), "unhealthy"),
])
def test_texts_are_teis(error, text):
    assert error.message == str(error) == text


def test_prompt_names_are_listed_as_rust_prints_them():
    assert rust_list(["query", "passage"]) == '["query", "passage"]'
