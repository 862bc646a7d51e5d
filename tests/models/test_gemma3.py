"""Gemma3 (`gemma3_text`) against transformers' Gemma3TextModel, and the EmbeddingGemma
pipeline against sentence-transformers, on tiny random models saved with the hub's names.

Tolerances (float32): hidden states and mean-pooled vectors max abs error < 1e-5, right-padded
and one input at a time; the sentence-transformers pipeline (mean pooling, Dense, Dense,
Normalize, the `query` prompt) max abs error < 1e-5 on the normalised embeddings. The tiny
stack has sliding, global, sliding layers (sliding_window 8, inputs up to 30 tokens), its own
rotary base per layer type, query_pre_attn_scalar != head_dim and randomised (1 + w) norms.
"""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm

from tei_jax.config import load_spec
from tei_jax.engine import EMBED_ALL
from tei_jax.errors import ModelLoadError
from tei_jax.models import gemma3

TOL = 1e-5
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def make_gemma3(tag: str = "", **overrides):
    folder = tm.ROOT / f"gemma3-{tag}"
    def build(into) -> None:
        import torch
        import transformers

        torch.manual_seed(3)
        kwargs = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      intermediate_size=37, vocab_size=30522, max_position_embeddings=128, query_pre_attn_scalar=24,
                      sliding_window=8, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                      rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                       "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}},
                      pad_token_id=0, rms_norm_eps=1e-6)
        kwargs.update(overrides)
        model = transformers.Gemma3TextModel(transformers.Gemma3TextConfig(**kwargs)).eval()
        with torch.no_grad():  # (1 + w) norms start at w = 0: make them matter
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.add_(torch.randn_like(param) * 0.3)
        into.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(into, safe_serialization=True)
        tm._copy_tokenizer(into)
        tm.write_pooling(into, "mean")

    return tm.build_once(folder, build)


def reference(folder, items):
    """Gemma3TextModel's last_hidden_state for a right-padded batch, and the mask."""
    import torch
    import transformers

    model = transformers.Gemma3TextModel.from_pretrained(folder, attn_implementation="eager").eval()
    length = max(len(i) for i in items)
    ids = torch.tensor([list(i.input_ids) + [0] * (length - len(i)) for i in items])
    mask = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i in items])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state.numpy(), mask.numpy()


def _texts(seed: int) -> list[str]:
    return tm.random_texts(np.random.default_rng(seed), 5, 6, 30)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gemma3_matches_transformers(bidirectional):
    folder = make_gemma3(f"bidirectional-{bidirectional}", use_bidirectional_attention=bidirectional)
    model = tm.load_cached(folder)
    cfg = model.engine.arch.config
    assert cfg.sliding_layers == (0, 2) and cfg.window == (4 if bidirectional else 7)
    assert cfg.bidirectional is bidirectional and (cfg.rope_theta, cfg.local_theta) == (1e6, 100.0)
    texts = _texts(seed=81)
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    assert max(len(i) for i in items) > 16  # beyond the window
    ref, mask = reference(folder, items)
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < TOL
    mean = (ref * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(model.embed(texts, normalize=False) - mean).max() < TOL
    alone, _ = reference(folder, items[:1])
    assert np.abs(model.embed(texts[0], normalize=False)[0] - alone[0].mean(0)).max() < TOL


def test_legacy_hub_config_fields():
    """Hub configs: rope_theta, rope_local_base_freq, sliding_window_pattern (every 6th global)."""
    spec = load_spec(make_gemma3("bidirectional-True", use_bidirectional_attention=True))
    config = {k: v for k, v in spec.config.items() if k not in ("layer_types", "rope_parameters")}
    config.update(num_hidden_layers=7, rope_theta=1e6, rope_local_base_freq=10000.0, sliding_window_pattern=6,
                  rope_scaling={"rope_type": "linear", "factor": 8.0})
    cfg = gemma3.parse_config(dataclasses.replace(spec, config=config))
    assert cfg.sliding_layers == (0, 1, 2, 3, 4, 6) and cfg.local_theta == 10000.0
    assert cfg.rope_theta == 1e6 and cfg.rope_scaling.factor == 8.0


def test_embeddinggemma_pipeline_matches_sentence_transformers():
    """mean pooling -> Dense(32->64) -> Dense(64->32), no biases, identity -> Normalize, with
    EmbeddingGemma-style prompts, saved and compared by sentence-transformers itself."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    folder = tm.ROOT / "embeddinggemma"
    def build(into) -> None:
        torch.manual_seed(5)
        base = make_gemma3("bidirectional-True", use_bidirectional_attention=True)
        modules = [Transformer(str(base)), Pooling(32, "mean"),
                   Dense(32, 64, bias=False, activation_function=torch.nn.Identity()),
                   Dense(64, 32, bias=False, activation_function=torch.nn.Identity()), Normalize()]
        SentenceTransformer(modules=modules, prompts=PROMPTS).save(str(into))
        # modules.json types and 1_Pooling flags as EmbeddingGemma publishes them (sentence-transformers
        # 6 writes `sentence_transformers.base.modules.*` types and a `pooling_mode` string).
        listed = json.loads((into / "modules.json").read_text())
        for module in listed:
            module["type"] = "sentence_transformers.models." + module["type"].rsplit(".", 1)[1]
        (into / "modules.json").write_text(json.dumps(listed))
        tm.write_pooling(into, "mean")
        flags = json.loads((into / "1_Pooling" / "config.json").read_text())
        (into / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, **flags, "include_prompt": True}))
    tm.build_once(folder, build)
    st = SentenceTransformer(str(folder), device="cpu")
    model = tm.load_cached(folder)
    assert [d.out_features for d in model.spec.dense] == [64, 32] and model.spec.prompts == PROMPTS
    texts = _texts(seed=82)
    for prompt in ("query", "document"):
        expected = st.encode(texts, prompt_name=prompt, convert_to_numpy=True)
        assert np.abs(model.embed(texts, prompt_name=prompt) - expected).max() < TOL


@pytest.mark.parametrize("change,match", [
    ({"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ({"layer_types": ["sliding_attention", "chunked_attention", "full_attention"]}, "layer_types"),
    ({"rope_parameters": {"full_attention": {"rope_type": "longrope"}, "sliding_attention": {}}}, "rope_type"),
])
def test_unsupported_configs_are_refused_by_field(change, match):
    spec = load_spec(make_gemma3("bidirectional-True", use_bidirectional_attention=True))
    with pytest.raises(ModelLoadError, match=match):
        gemma3.build(dataclasses.replace(spec, config={**spec.config, **change}), jnp.float32, "xla")
