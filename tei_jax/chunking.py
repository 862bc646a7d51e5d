"""Chunked embedding of inputs longer than the model's limit (opt-in: `chunk_long_inputs`).

TEI truncates (or refuses) an input longer than `max_input_length`. With chunking on, such an
input is split into token windows that each fit the model, every window is embedded like any
other input, and the window vectors are pooled into one: a mean weighted by each window's
token count, as vLLM's chunked processing does. For mean pooling that is the mean over every
token computed. Each window repeats the input's leading and trailing special tokens (and the
prompt, when it tokenizes as a clean prefix), so it looks like an ordinary input to the
model; consecutive windows share `overlap` content tokens. Normalisation and Matryoshka
truncation apply afterwards, to the pooled vector. Inputs that fit are tokenized exactly as
without chunking, so their vectors do not change.

Only dense embeddings are chunked: per-token states, SPLADE, classifiers and rerankers keep
TEI's rules (`load()` refuses the option for models that cannot embed densely).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from .errors import ValidationError
from .tokenization import Encoded, Input, Tokenizer


@dataclasses.dataclass(frozen=True)
class ChunkOptions:
    """How long inputs are split: `overlap` content tokens shared by consecutive windows."""

    overlap: int = 0

    def __post_init__(self):
        if not isinstance(self.overlap, int) or self.overlap < 0:
            raise ValueError(f"chunk overlap must be a non-negative integer, got {self.overlap!r}")


class Windows(list):
    """The flat list of entries to run (windows of long inputs, short inputs whole), with
    `counts[i]` = how many consecutive entries belong to input i."""

    def __init__(self, entries: Sequence[Encoded], counts: Sequence[int]):
        super().__init__(entries)
        self.counts = list(counts)


def split(whole: Encoded, lead: int, trail: int, limit: int, overlap: int) -> list[Encoded]:
    """Windows of at most `limit` tokens over `whole`, each repeating its first `lead` and last
    `trail` tokens; consecutive windows share `overlap` of the tokens in between."""
    ids, types = whole.input_ids, whole.type_ids
    if len(ids) <= limit or lead + trail >= len(ids):
        return [whole]
    size = limit - lead - trail
    if size <= overlap:
        raise ValidationError(
            f"chunk overlap ({overlap}) must be smaller than the "
            f"window's {size} content tokens (max_input_length {limit}, {lead + trail} repeated)"
        )
    head, tail = slice(0, lead), slice(len(ids) - trail, len(ids))
    body = slice(lead, len(ids) - trail)
    content, content_types = ids[body], types[body]
    windows, start = [], 0
    while True:
        stop = min(start + size, len(content))
        windows.append(Encoded(
            ids[head] + content[start:stop] + ids[tail],
            types[head] + content_types[start:stop] + types[tail],
            whole.chars if start == 0 else 0,
        ))
        if stop == len(content):
            return windows
        start += size - overlap


def encode(tokenizer: Tokenizer, items: Sequence[Input], options: ChunkOptions, *, truncate: bool,
           truncation_direction: str = "right", prompt_name: str | None = None) -> Windows:
    """Tokenize each input; a text longer than the limit becomes several windows. Token-id
    inputs keep TEI's rules (they are the caller's own windows already)."""
    entries, counts = [], []
    for item in items:
        if isinstance(item, str):
            windows = _text_windows(tokenizer, item, options, prompt_name)
        else:
            windows = [tokenizer.encode(item, truncate=truncate, truncation_direction=truncation_direction,
                                        prompt_name=prompt_name)]
        entries.extend(windows)
        counts.append(len(windows))
    return Windows(entries, counts)


def _text_windows(tokenizer: Tokenizer, text: str, options: ChunkOptions, prompt_name: str | None) -> list[Encoded]:
    try:  # most texts fit: tokenized once, exactly as without chunking
        return [tokenizer.encode(text, truncate=False, prompt_name=prompt_name)]
    except ValidationError:  # too long (or an unknown prompt, which encode_whole raises again)
        whole, lead, trail = tokenizer.encode_whole(text, prompt_name=prompt_name)
    return split(whole, lead, trail, tokenizer.max_input_length, options.overlap)


def pool(outputs: Sequence[np.ndarray], windows: Windows) -> list[np.ndarray]:
    """One vector per input: the token-weighted mean of its windows' pooled vectors."""
    pooled, at = [], 0
    for count in windows.counts:
        vectors = np.asarray(outputs[at:at + count], dtype=np.float32)
        if count == 1:
            pooled.append(vectors[0])
        else:
            weights = np.array([len(w) for w in windows[at:at + count]], dtype=np.float32)
            pooled.append((weights[:, None] * vectors).sum(axis=0) / weights.sum())
        at += count
    return pooled
