"""TEI's single-vs-batch input rules, the one copy the model and the server share."""

import pytest

from tei_jax import inputs
from tei_jax.errors import EmptyInputError, ValidationError


@pytest.mark.parametrize("value, size, is_batch", [
    ("text", 1, False), ([101, 2054, 102], 1, False), (["a", "b"], 2, True),
    ([[101, 102], "a"], 2, True), ([[101, 102]], 1, True),
])
def test_embed_inputs(value, size, is_batch):
    assert inputs.embed_size(value) == (size, is_batch)
    batch = inputs.embed_batch(value)
    assert (batch.size, batch.is_batch) == (size, is_batch)


def test_embed_input_errors():
    assert inputs.embed_size([]) == (1, False)  # one empty id list, as serde reads TEI's Input
    with pytest.raises(EmptyInputError, match="`inputs` cannot be empty"):
        inputs.embed_batch([])
    with pytest.raises(ValidationError):
        inputs.embed_batch(5)


def test_predict_inputs():
    assert inputs.predict_batch("a").items == [["a"]] and not inputs.predict_batch("a").is_batch
    assert inputs.predict_batch(["a", "b"]).items == [["a", "b"]]  # one pair
    batch = inputs.predict_batch([["a"], ["a", "b"]])
    assert batch.is_batch and batch.items == [["a"], ["a", "b"]]
    assert inputs.predict_size([["a"], ["a", "b"]]) == (2, True) and inputs.predict_size(["a", "b"]) == (1, False)
    with pytest.raises(ValidationError, match="one text or a pair"):
        inputs.predict_batch([["a", "b", "c"]])
    with pytest.raises(EmptyInputError):
        inputs.predict_batch([])


def test_similarity_rerank_tokenize_decode_inputs():
    assert inputs.similarity_batch("s", ["a", "b"]).items == ["s", "a", "b"]
    with pytest.raises(EmptyInputError, match="`inputs.sentences` cannot be empty"):
        inputs.similarity_batch("s", [])
    assert inputs.rerank_batch("q", ["a"]).items == [("q", "a")]
    with pytest.raises(EmptyInputError, match="`texts` cannot be empty"):
        inputs.rerank_batch("q", [])
    assert inputs.text_batch("a").items == ["a"] and inputs.text_batch(["a", "b"]).is_batch
    assert inputs.ids_batch([1, 2]).items == [[1, 2]] and inputs.ids_batch([[1], [2]]).size == 2
    with pytest.raises(EmptyInputError, match="`input_ids` cannot be empty"):
        inputs.ids_batch([])
