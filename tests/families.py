"""One tiny model folder per family (the factories the family tests use), by name, for tests
that check one behaviour across every family (tests/test_functional.py, tests/test_save.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "models"))

import tiny_models as tm  # noqa: E402


def _bert(family: str, head: str = "base", pooling: str | None = "mean"):
    folder = tm.make_model(family, head)
    if pooling:
        tm.write_pooling(folder, pooling)
    return folder


def _hf(kind: str, head: str = "base", **overrides):
    from encoder_models import hf_model

    folder = hf_model(kind, head, **overrides)
    if head == "base":
        tm.write_pooling(folder, "mean")
    return folder


def _jina():
    from encoder_models import fake_checkpoint, random_weights
    from test_jina import IMPLEMENTATION, jina_config, published_shapes

    config = jina_config(IMPLEMENTATION)
    return fake_checkpoint("jina-False", config, random_weights(published_shapes(config, False), seed=1))


def _deberta():
    from deberta_models import make_deberta

    return make_deberta("v2-xlarge")  # the disentangled score bias and the first-layer convolution


def _decoder():
    from test_decoders import make_decoder

    return make_decoder("qwen3")


# name -> (folder factory, load options)
EMBEDDERS = {
    "bert": (lambda: _bert("bert"), {}),
    "distilbert": (lambda: _bert("distilbert"), {}),
    "roberta": (lambda: _bert("roberta"), {}),
    "nomic": (lambda: _hf("nomic_bert"), {}),
    "gte": (lambda: _hf("gte", type_vocab_size=2), {}),
    "modernbert": (lambda: _hf("modernbert"), {}),
    "mpnet": (lambda: _hf("mpnet"), {}),
    "jina": (_jina, {}),
    "deberta": (_deberta, {}),
    "qwen3": (_decoder, {}),
}
CLASSIFIER = lambda: _bert("bert", "classification", pooling=None)  # noqa: E731
SPLADE = lambda: _bert("bert", "masked_lm", pooling=None)  # noqa: E731


def load(name: str):
    factory, options = EMBEDDERS[name]
    return tm.load_cached(factory(), **options)
