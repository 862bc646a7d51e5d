"""TEI's input rules, in one place: what is one input and what is a batch.

- embed-like `inputs`: a string or ONE token-id list is a single input; a list of those is a
  batch (`[101, 2054, 102]` is one input, `[[101], "text"]` two).
- predict `inputs`: a string is one text, a list of strings ONE pair (or one text), a list of
  lists a batch of texts and pairs.
- similarity: the source sentence and at least one sentence; rerank: at least one text.
- tokenize `inputs`: one string or a list; decode `ids`: one id list, or a list of id lists.

`Model` validates with these; the server's schemas count with them (`size`) before it takes
its permits, so both sides agree on what a request holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, Sequence, TypeVar

from .errors import EmptyBatchError, EmptyInputError, ValidationError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Batch(Generic[T]):
    """A request's inputs as a list, and whether the caller sent a batch (the answer's shape)."""

    items: list[T]
    is_batch: bool

    @property
    def size(self) -> int:
        return len(self.items)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_id(x) for x in value)


def embed_size(inputs: Any) -> tuple[int, bool]:
    """(items, is_batch) of an embed-like input, without validating it. `[]` is one (empty)
    id list, as serde reads TEI's untagged `Input`: its single form comes first."""
    if isinstance(inputs, str) or _is_id_list(inputs) or (isinstance(inputs, (list, tuple)) and not inputs):
        return 1, False
    return (len(inputs), True) if isinstance(inputs, (list, tuple)) else (1, False)


def embed_batch(inputs: Any) -> Batch:
    """An embed-like input as a batch of strings and id lists (TEI's `Input`)."""
    if isinstance(inputs, str):
        return Batch([inputs], False)
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:  # one empty id list (TEI's core refuses it, with its prefix)
            raise EmptyInputError("`inputs` cannot be empty")
        if _is_id_list(inputs):
            return Batch([list(inputs)], False)
        return Batch(list(inputs), True)
    raise ValidationError("`inputs` must be a string, a list of token ids, or a list of those")


def predict_size(inputs: Any) -> tuple[int, bool]:
    """(items, is_batch) of a predict input, without validating it."""
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (list, tuple)):
        return len(inputs), True
    return 1, False


def predict_batch(inputs: Any) -> Batch[list[str]]:
    """A predict input as a batch of [text] or [text, pair] items."""
    if isinstance(inputs, str):
        batch = Batch([[inputs]], False)
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
        batch = Batch([list(inputs)], False)
    elif isinstance(inputs, (list, tuple)) and inputs:
        batch = Batch([list(x) if isinstance(x, (list, tuple)) else [x] for x in inputs], True)
    else:
        raise EmptyInputError("`inputs` cannot be empty")
    for item in batch.items:
        if not 1 <= len(item) <= 2 or not all(isinstance(x, str) for x in item):
            raise ValidationError("each predict input must be one text or a pair of texts")
    return batch


def similarity_batch(source_sentence: str, sentences: Sequence[str]) -> Batch[str]:
    """/similarity's input: the source, then the sentences (they must not be empty)."""
    if not sentences:
        raise EmptyBatchError("`inputs.sentences` cannot be empty")
    return Batch([source_sentence, *sentences], True)


def rerank_batch(query: str, texts: Sequence[str]) -> Batch[tuple[str, str]]:
    """/rerank's input: one (query, text) pair per text (there must be some)."""
    if not texts:
        raise EmptyBatchError("`texts` cannot be empty")
    return Batch([(query, text) for text in texts], True)


def text_batch(inputs: str | Sequence[str]) -> Batch[str]:
    """/tokenize's input: one string or a list of strings."""
    if isinstance(inputs, str):
        return Batch([inputs], False)
    items = list(inputs)
    if not items:
        raise EmptyBatchError("`inputs` cannot be empty")
    return Batch(items, True)


def ids_batch(ids: Sequence[int] | Sequence[Sequence[int]]) -> Batch[list[int]]:
    """/decode's input: one id list or a list of id lists (an empty list reads as one empty
    id list, as serde reads TEI's `InputIds`)."""
    if len(ids) == 0:
        raise EmptyInputError("`input_ids` cannot be empty")
    if all(_is_id(i) for i in ids):
        return Batch([list(ids)], False)
    return Batch([list(item) for item in ids], True)
