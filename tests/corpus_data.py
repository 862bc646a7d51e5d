"""Small corpora for the corpus tests: short varied documents, a few long ones, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tiny_models import make_model, random_texts, write_pooling

LIMIT = 64  # the tiny model's max_input_length
LOAD = dict(max_batch_tokens=256, chunk_long_inputs=True, chunk_overlap=8)  # as tiny_models.load_cached


def embed_model_dir() -> Path:
    """The tiny mean-pooling BERT shared with tests/test_chunking.py."""
    folder = make_model("bert", max_position_embeddings=LIMIT)
    write_pooling(folder, "mean")
    return folder


def documents(n_short: int, n_long: int, seed: int = 0) -> list[str]:
    """Short documents with a few long ones (several windows each) spread among them."""
    rng = np.random.default_rng(seed)
    texts = random_texts(rng, n_short, 1, 24)
    for k in range(n_long):
        texts.insert((k + 1) * n_short // (n_long + 1), " ".join(random_texts(rng, 25, 5, 12)))
    return texts


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
