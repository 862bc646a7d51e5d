"""TEI's error texts: the core's errors carry their type's prefix, the handlers' own checks not."""

from __future__ import annotations

import pytest

from app.errors import batch_size_error, tei_text
from tei_jax.errors import BackendError, EmptyInputError, OverloadedError, TokenizerError, ValidationError
from tei_jax.tokenization import rust_list


@pytest.mark.parametrize("error, text", [
    (BackendError("Model is not an embedding model"), "Backend error: Model is not an embedding model"),
    (BackendError("model is not a re-ranker model"), "Backend error: model is not a re-ranker model"),
    (BackendError("`normalize` is not available for SPLADE models"),
     "Backend error: `normalize` is not available for SPLADE models"),
    (ValidationError("`dimensions` should be positive"), "Input validation error: `dimensions` should be positive"),
    (ValidationError("Input validation error: `inputs` must have less than 128 tokens. Given: 302"),
     "Input validation error: `inputs` must have less than 128 tokens. Given: 302"),
    (EmptyInputError("Input validation error: `inputs` cannot be empty"),
     "Input validation error: `inputs` cannot be empty"),
    (EmptyInputError("`inputs` cannot be empty"), "`inputs` cannot be empty"),  # the handler's own check
    (EmptyInputError("`texts` cannot be empty"), "`texts` cannot be empty"),
    (EmptyInputError("`ids` cannot be empty"), "`ids` cannot be empty"),
    (batch_size_error(33, 32), "batch size 33 > maximum allowed batch size 32"),
    (OverloadedError("Model is overloaded"), "Model is overloaded"),
    (TokenizerError("tokenizer error boom"), "tokenizer error boom"),
])
def test_texts_are_teis(error, text):
    assert tei_text(error) == text


def test_prompt_names_are_listed_as_rust_prints_them():
    assert rust_list(["query", "passage"]) == '["query", "passage"]'
