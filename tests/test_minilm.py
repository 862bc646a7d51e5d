"""The bundled all-MiniLM-L6-v2 (real weights) against sentence-transformers.

Reference figures from design.md: "What is Deep Learning?" -> ids [101, 2054, 2003, 2784, 4083,
1029, 102] and a normalised embedding starting -0.077851, -0.03328, 0.019743, 0.007226.
Tolerance: cosine >= 0.99999 per sentence (float32).
"""

import numpy as np
import pytest
import tiny_models as tm

SENTENCES = [
    "What is Deep Learning?",
    "A",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Naïve café owners in Zürich serve crème brûlée.",
    "東京は日本の首都です。",
    "שלום עולם",
    "Привет, как дела?",
    "Emojis 🙂🚀 and symbols ∑ ∞ ≈ are tokenized too.",
    "   leading and trailing spaces   ",
    "UPPER CASE AND lower case",
    "numbers 3.14159 2.71828 1,000,000",
    "tabs\tand\nnewlines",
    "a " * 300,  # truncated at 256 tokens
    "long sentence " + "with many repeated words " * 60,
]


@pytest.fixture(scope="module")
def minilm():
    return tm.load_cached(tm.minilm_dir(), max_batch_tokens=4096)


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tm.minilm_dir()), device="cpu")


def _sentences():
    generated = tm.random_texts(np.random.default_rng(2026), 40, 1, 120)
    return SENTENCES + generated


def test_reference_figures(minilm):
    assert minilm.tokenizer.encode("What is Deep Learning?", truncate=True).input_ids == (
        101, 2054, 2003, 2784, 4083, 1029, 102)
    vector = minilm.embed("What is Deep Learning?")[0]
    assert np.allclose(vector[:4], [-0.077851, -0.03328, 0.019743, 0.007226], atol=2e-6)


def test_matches_sentence_transformers(minilm, st_model):
    sentences = _sentences()
    assert len(sentences) >= 50
    ours = minilm.embed(sentences)
    ref = st_model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    cosines = (ours * ref).sum(axis=1)
    assert cosines.min() >= 0.99999, cosines.argmin()
    assert np.abs(ours - ref).max() < 1e-5
