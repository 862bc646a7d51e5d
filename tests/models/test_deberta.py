"""DeBERTa-v2/v3 against transformers' DebertaV2Model, DebertaV2ForSequenceClassification and
DebertaV2ForMaskedLM on tiny random models saved with the hub's names.

Tolerances (float32): max abs error < 1e-5 on hidden states (packed batches, and each input
alone), mean-pooled vectors, logits and SPLADE vectors. The three layouts are the public
checkpoints' (deberta_models.py): v3 (shared keys, log buckets, normalised relative
embeddings), v2-xlarge (plus the first-layer convolution) and the original v2 (separate
position projections, clamped distances, absolute positions, token types). Inputs run to 60
tokens against 16 buckets and a clamp at 24, so the log range and the clamp are both reached.
"""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm
from deberta_models import VARIANTS, make_deberta
from encoder_models import loaded_params, shapes_match_module, texts_and_items, torch_outputs

from tei_jax.config import load_spec
from tei_jax.engine import EMBED_ALL, PREDICT
from tei_jax.errors import ModelLoadError
from tei_jax.models import deberta

TOL = 1e-5


def _packs_rows(model, items) -> bool:
    """Whether the planner put more than one input in some row (so packing is exercised)."""
    batches = model.engine.policy.plan([len(i) for i in items])
    return any(len({p.row for p in b.placements}) < len(b.placements) for b in batches)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hidden_states_match_transformers(variant):
    folder = make_deberta(variant)
    arch, params, unused = loaded_params(folder)
    assert unused == [] and shapes_match_module(arch, params)
    model = tm.load_cached(folder)
    texts, items = texts_and_items(model, seed=61, n=6, max_words=40)
    assert max(len(i) for i in items) > 30 and _packs_rows(model, items)
    out, mask = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < TOL
    for k in (0, 5):  # alone: no padding, no packing neighbours
        alone = model.engine.run_all(EMBED_ALL, [items[k]])[0]
        assert np.abs(alone - ref[k, : len(items[k])]).max() < TOL
    pooled_ref = (ref * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    assert np.abs(model.embed(texts, normalize=False) - pooled_ref).max() < TOL


@pytest.mark.parametrize("num_labels", [1, 3])
def test_classifier_matches_transformers(num_labels):
    folder = make_deberta("v3", "classification", num_labels=num_labels)
    model = tm.load_cached(folder)
    assert model.kind == ("reranker" if num_labels == 1 else "classifier")
    _, items = texts_and_items(model, seed=62, n=5)
    out, _ = torch_outputs(folder, items, "classification")
    logits = np.stack(model.engine.run_all(PREDICT, items))
    assert np.abs(logits - out.logits.numpy()).max() < TOL


@pytest.mark.parametrize("legacy", [True, False])
def test_splade_matches_masked_lm(legacy):
    """legacy=True: transformers' `cls.predictions.*` head; False: the hub's `lm_predictions.lm_head.*`."""
    folder = make_deberta("v3", "masked_lm", legacy=legacy)
    names = load_spec(folder, pooling="splade").tensor_names
    assert any(n.startswith("lm_predictions." if not legacy else "cls.predictions.") for n in names)
    model = tm.load_cached(folder, pooling="splade")
    texts, items = texts_and_items(model, seed=63, n=4)
    out, mask = torch_outputs(folder, items, "masked_lm")
    ref = np.max(np.log1p(np.maximum(out.logits.numpy(), 0)) * mask[:, :, None], axis=1)
    assert np.abs(model.embed(texts, normalize=False) - ref).max() < TOL


@pytest.mark.parametrize("buckets,max_position", [(256, 512), (16, 128), (256, 4096), (64, 24)])
def test_log_buckets_match_transformers(buckets, max_position):
    import torch
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    distance = np.arange(-5000, 5001)
    expected = make_log_bucket_position(torch.tensor(distance), buckets, max_position).long().numpy()
    assert (deberta.log_bucket(distance, buckets, max_position) == expected).all()


def test_unigram_tokenizer_and_pair_scores():
    """A DeBERTa-v3 style tokenizer.json (sentencepiece Unigram, Metaspace, [CLS] a [SEP] b [SEP])
    loads, encodes as the tokenizers library does, and the reranker scores its pairs as
    transformers does."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    texts = tm.random_texts(np.random.default_rng(64), 6, 3, 20)
    words = sorted({w for t in texts for w in t.split()})
    pieces = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0)]
    pieces += [(f"\u2581{w}", -2.0 - 0.1 * i) for i, w in enumerate(words[::2])]  # every other word whole
    pieces += [(c, -8.0) for c in sorted({c for w in words for c in w} | {"\u2581"})]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    folder = make_deberta("v3", "classification", num_labels=1, vocab_size=len(pieces), tag="unigram")
    tokenizer.save(str(folder / "tokenizer.json"))
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    model = tm.load_cached(folder)
    query, documents = texts[0], texts[1:]
    expected = [tokenizer.encode(query, d).ids for d in documents]
    got = [list(model.tokenizer.encode(query, pair=d, truncate=True).input_ids) for d in documents]
    assert got == expected and all(e[0] == 1 and e[-1] == 2 and 3 not in e for e in expected)
    reference = transformers.DebertaV2ForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    with torch.no_grad():
        for ids in expected:
            scores.append(float(reference(input_ids=torch.tensor([ids])).logits[0, 0]))
    ranked = model.rerank(query, documents, raw_scores=True)
    by_index = {r["index"]: r["score"] for r in ranked}
    assert np.abs(np.array([by_index[i] for i in range(len(documents))]) - scores).max() < TOL


def _spec(**changes):
    spec = load_spec(make_deberta("v3"))
    return dataclasses.replace(spec, config={**spec.config, **changes})


@pytest.mark.parametrize("change,field", [
    ({"embedding_size": 16}, "embedding_size"),
    ({"pooler_hidden_size": 16}, "pooler_hidden_size"),
    ({"conv_kernel_size": 4}, "conv_kernel_size"),
    ({"conv_kernel_size": 3, "conv_groups": 2}, "conv_groups"),
    ({"pos_att_type": "c2p|p2p"}, "pos_att_type"),
    ({"pos_att_type": None}, "pos_att_type"),
    ({"norm_rel_ebd": "layer_norm|scale"}, "norm_rel_ebd"),
    ({"hidden_act": "snake"}, "hidden_act"),
])
def test_unsupported_configs_are_refused_by_field(change, field):
    with pytest.raises(ModelLoadError, match=field):
        deberta.build(_spec(**change), jnp.float32, "xla")


def test_hub_config_spelling():
    """deberta-v3-base's config.json: pos_att_type as "p2c|c2p", max_relative_positions -1."""
    cfg = deberta.parse_config(_spec(pos_att_type="p2c|c2p", position_buckets=256, max_relative_positions=-1,
                                     max_position_embeddings=512))
    assert cfg.pos_att_type == ("c2p", "p2c") and cfg.span == 256 and cfg.max_relative == 512
    assert cfg.scale == pytest.approx(1 / np.sqrt(3 * cfg.head_dim))
    assert json.loads((make_deberta("v3") / "config.json").read_text())["model_type"] == "deberta-v2"


@pytest.mark.slow
def test_deberta_v3_base_shape_at_full_length():
    """deberta-v3-base's own config (hidden 768, 12 layers, 256 buckets over 512 positions;
    vocabulary cut to the test tokenizer's) at inputs up to 512 tokens, where every log bucket
    is reached, packed and alone. Random weights at transformers' initialisation."""
    folder = make_deberta("v3", tag="base-shape", **V3_BASE_SHAPE)
    model = tm.load_cached(folder, max_batch_tokens=1024)
    texts = tm.random_texts(np.random.default_rng(65), 4, 5, 40) + ["embeddings are vectors " * 200]
    items = [model.tokenizer.encode(t, truncate=True) for t in texts]
    assert len(items[-1]) == 512 and _packs_rows(model, items)
    out, _ = torch_outputs(folder, items)
    ref = out.last_hidden_state.numpy()
    for k, hidden in enumerate(model.engine.run_all(EMBED_ALL, items)):
        assert np.abs(hidden - ref[k, : len(items[k])]).max() < TOL
    alone = model.engine.run_all(EMBED_ALL, [items[0]])[0]
    assert np.abs(alone - ref[0, : len(items[0])]).max() < TOL


V3_BASE_SHAPE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=512, position_buckets=256, initializer_range=0.02)
