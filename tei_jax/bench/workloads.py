"""Benchmark inputs: texts with a known token-length distribution, reproducible from a seed.

Texts are made of words that are whole entries of the model's WordPiece vocabulary, so a
text of n - 2 words is exactly n tokens with [CLS] and [SEP]; every length is checked
against the real tokenizer and adjusted, so other tokenizers work too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

WORKLOADS = ("fixed512", "short", "query16", "mixed")


@dataclasses.dataclass
class Workload:
    name: str
    texts: list[str]
    lengths: list[int]  # tokens per text, special tokens included, before truncation
    note: str = ""

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))


def target_lengths(name: str, count: int, max_length: int, seed: int = 0) -> tuple[list[int], str]:
    """Token lengths for a workload: fixed512 (TEI's headline), short (8-32 tokens, queries),
    query16 (16 tokens each: the single-query latency case), mixed (lognormal, median 28, clipped to 8..512: sentences with a long tail of passages)."""
    rng = np.random.default_rng(seed)
    if name == "fixed512":
        length = min(512, max_length)
        note = "" if length == 512 else f"512 tokens capped at the model's max input length {length}"
        return [length] * count, note
    if name == "query16":
        return [min(16, max_length)] * count, ""
    if name == "short":
        return [int(x) for x in rng.integers(8, 33, size=count)], ""
    if name == "mixed":
        raw = rng.lognormal(mean=np.log(28.0), sigma=0.8, size=count)
        clipped = np.clip(np.round(raw), 8, 512).astype(int)
        capped = np.minimum(clipped, max_length)
        note = "" if max_length >= 512 else f"lengths capped at the model's max input length {max_length}"
        return [int(x) for x in capped], note
    raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")


def _word_pool(tokenizer) -> list[str]:
    vocab = tokenizer.get_vocab()
    words = sorted(w for w in vocab if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 9)
    if len(words) < 100:
        raise RuntimeError("the tokenizer's vocabulary has too few plain words to build texts from")
    return words


def make_workload(name: str, count: int, model_dir: Path, max_length: int, seed: int = 0) -> Workload:
    """`count` texts whose token counts follow the workload's distribution."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    words = _word_pool(tokenizer)
    rng = np.random.default_rng(seed + 1)
    wanted, note = target_lengths(name, count, max_length, seed)
    special = len(tokenizer.encode("").ids)
    texts, lengths = [], []
    for length in wanted:
        picks = [words[i] for i in rng.integers(0, len(words), size=max(1, length - special))]
        text = " ".join(picks)
        actual = len(tokenizer.encode(text).ids)
        while actual > length and len(picks) > 1:  # a non-WordPiece tokenizer split a word
            picks.pop()
            text = " ".join(picks)
            actual = len(tokenizer.encode(text).ids)
        texts.append(text)
        lengths.append(actual)
    return Workload(name, texts, lengths, note)
