"""Chunked embedding of long inputs, against an independent reference: the windows built by
hand from the raw token ids, run through transformers, mean-pooled and averaged by tokens."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

import tei_jax
from tei_jax import chunking
from tei_jax.errors import ModelLoadError, ValidationError
from tei_jax.tokenization import Encoded
from corpus_data import LIMIT, embed_model_dir
from tiny_models import load_cached, make_model, random_texts


@pytest.fixture(scope="module")
def folder():
    return embed_model_dir()


@pytest.fixture(scope="module")
def plain(folder):
    return load_cached(folder)


@pytest.fixture(scope="module")
def chunked(folder):
    return load_cached(folder, chunk_long_inputs=True, chunk_overlap=8)


def reference(folder, text: str, overlap: int) -> np.ndarray:
    """Independent: [CLS] + content window + [SEP] by hand, torch BERT, masked mean, then the
    token-weighted mean of the windows, then L2."""
    import torch
    import transformers

    tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    content = tok.encode(text, add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    size = LIMIT - 2
    windows = [[cls] + content[i:i + size] + [sep] for i in range(0, max(len(content) - overlap, 1), size - overlap)]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    vectors, weights = [], []
    with torch.no_grad():
        for window in windows:
            hidden = model(input_ids=torch.tensor([window])).last_hidden_state[0].numpy()
            vectors.append(hidden.mean(axis=0))
            weights.append(len(window))
    pooled = np.average(np.stack(vectors), axis=0, weights=weights)
    return pooled / np.linalg.norm(pooled)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_long_input_matches_hand_built_windows(folder, chunked):
    rng = np.random.default_rng(3)
    texts = [" ".join(random_texts(rng, 30, 5, 12)) for _ in range(2)]  # ~200-400 tokens each
    short = random_texts(rng, 3, 2, 8)
    vectors = chunked.embed([texts[0], *short, texts[1]])
    for text, vector in zip(texts, vectors[[0, 4]]):
        assert cosine(vector, reference(folder, text, overlap=8)) > 0.99999
    assert np.abs(np.linalg.norm(vectors, axis=1) - 1).max() < 1e-5


def test_inputs_that_fit_are_unchanged(plain, chunked):
    texts = random_texts(np.random.default_rng(4), 20, 1, 20)
    np.testing.assert_array_equal(chunked.embed(texts), plain.embed(texts))
    np.testing.assert_array_equal(chunked.embed(texts[0], dimensions=8, normalize=False),
                                  plain.embed(texts[0], dimensions=8, normalize=False))


def test_without_chunking_long_inputs_are_truncated_as_tei(plain):
    text = " ".join(["embeddings are vectors"] * 60)
    assert plain.embed(text).shape == (1, 32)
    with pytest.raises(ValidationError, match="tokens"):
        plain.embed(text, truncate=False)


def test_windows_share_overlap_and_repeat_specials():
    whole = Encoded(tuple(range(100, 120)), (0,) * 20, 20)
    windows = chunking.split(whole, lead=1, trail=1, limit=8, overlap=2)
    assert [w.input_ids[0] for w in windows] == [100] * len(windows)
    assert [w.input_ids[-1] for w in windows] == [119] * len(windows)
    bodies = [w.input_ids[1:-1] for w in windows]
    assert all(len(w) <= 8 for w in windows)
    assert bodies[0] == tuple(range(101, 107)) and bodies[1][:2] == bodies[0][-2:]
    covered = sorted({t for body in bodies for t in body})
    assert covered == list(range(101, 119))
    assert sum(w.chars for w in windows) == 20
    with pytest.raises(ValidationError, match="overlap"):
        chunking.split(whole, lead=1, trail=1, limit=8, overlap=6)


def test_pool_is_token_weighted():
    windows = chunking.Windows([Encoded((1,) * 4, (0,) * 4, 1), Encoded((1,) * 2, (0,) * 2, 0),
                                Encoded((1,), (0,), 1)], counts=[2, 1])
    pooled = chunking.pool([np.array([1.0, 0.0]), np.array([4.0, 3.0]), np.array([5.0, 5.0])], windows)
    np.testing.assert_allclose(pooled[0], [2.0, 1.0])
    np.testing.assert_allclose(pooled[1], [5.0, 5.0])


def test_refused_where_it_has_no_meaning():
    with pytest.raises(ModelLoadError, match="dense embedding models only"):
        tei_jax.load(str(make_model("bert", head="classification")), chunk_long_inputs=True)
    with pytest.raises(ModelLoadError, match="non-negative"):
        tei_jax.load(str(make_model("bert", max_position_embeddings=LIMIT)), chunk_long_inputs=True, chunk_overlap=-1)
