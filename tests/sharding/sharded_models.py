"""Tiny models of every family whose widths split over a tensor-parallel axis of 2 (MLP width
64 instead of the family tests' 37), plus a decoder with 8 heads for tensor parallelism 8.

Built in the pytest process (they need torch); the multi-device checks only read the folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "models"))

import tiny_models as tm  # noqa: E402

MLP = 64


def _bert(family: str, head: str = "base", pooling: str | None = "mean", **extra):
    width = {"hidden_dim": MLP} if family == "distilbert" else {"intermediate_size": MLP}
    folder = tm.make_model(family, head, **width, **extra)
    if pooling:
        tm.write_pooling(folder, pooling)
    return folder


def _hf(kind: str, **overrides):
    from encoder_models import hf_model

    folder = hf_model(kind, "base", intermediate_size=MLP, **overrides)
    tm.write_pooling(folder, "mean")
    return folder


def _jina():
    from encoder_models import fake_checkpoint, random_weights
    from test_jina import IMPLEMENTATION, jina_config, published_shapes

    config = dict(jina_config(IMPLEMENTATION), intermediate_size=MLP)
    return fake_checkpoint(f"jina-tp-{MLP}", config, random_weights(published_shapes(config, False), seed=1))


def _deberta():
    from deberta_models import make_deberta

    return make_deberta("v2-xlarge", tag="tp", intermediate_size=MLP)  # score bias + first-layer conv


def _gemma3():
    from test_gemma3 import make_gemma3

    return make_gemma3(tag=f"tp-{MLP}", intermediate_size=MLP)  # sliding + global layers


def _decoder(heads: int = 4, kv_heads: int = 2):
    from test_decoders import make_decoder

    return make_decoder("qwen3", tag=f"tp-{heads}-{kv_heads}", num_attention_heads=heads,
                        num_key_value_heads=kv_heads, intermediate_size=MLP)


# name -> (folder factory, tensor-parallel sizes to check besides data parallelism)
MODELS = {
    "bert": (lambda: _bert("bert"), (2,)),
    "distilbert": (lambda: _bert("distilbert"), (2,)),
    "roberta": (lambda: _bert("roberta"), (2,)),
    "nomic": (lambda: _hf("nomic_bert"), (2,)),
    "gte": (lambda: _hf("gte", type_vocab_size=2), (2,)),
    "modernbert": (lambda: _hf("modernbert"), (2,)),
    "mpnet": (lambda: _hf("mpnet"), (2,)),
    "jina": (_jina, (2,)),
    "deberta": (_deberta, (2,)),
    "gemma3": (_gemma3, (2,)),
    "qwen3": (lambda: _decoder(8, 2), (2, 8)),  # kv heads 2 < 8: replicated at tp 8
    "reranker": (lambda: _bert("bert", "classification", pooling=None, num_labels=1), (2,)),
    "splade": (lambda: _bert("bert", "masked_lm", pooling=None), (2,)),
}


def folders() -> dict[str, dict]:
    """name -> {"path", "tp"} for the multi-device check script."""
    return {name: {"path": str(factory()), "tp": list(tp)} for name, (factory, tp) in MODELS.items()}
