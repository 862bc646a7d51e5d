"""Model folder reading: kind, pooling, lengths, prompts, Dense modules, clear errors."""

import json
import shutil

import numpy as np
import pytest
import tiny_models as tm

import tei_jax
from tei_jax.config import load_spec
from tei_jax.errors import ModelLoadError


@pytest.fixture()
def base(tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(tm.make_model("bert", "base"), dest)
    return dest


def test_kinds_follow_tei_rules():
    assert load_spec(tm.make_model("bert", "classification", num_labels=1)).kind == "reranker"
    assert load_spec(tm.make_model("bert", "classification", num_labels=3)).kind == "classifier"
    spec = load_spec(tm.make_model("bert", "masked_lm"), pooling="splade")
    assert (spec.kind, spec.pooling, spec.embedding_dim) == ("embedding", "splade", 30522)
    # A bert model without 1_Pooling defaults to cls, like TEI.
    assert load_spec(tm.make_model("distilbert", "base", seed=1)).pooling == "cls"


def test_pooling_file_and_override(base):
    tm.write_pooling(base, "mean")
    assert load_spec(base).pooling == "mean"
    assert load_spec(base, pooling="last-token").pooling == "last_token"
    with pytest.raises(ModelLoadError, match="ForMaskedLM"):
        load_spec(base, pooling="splade")
    with pytest.raises(ModelLoadError, match="unknown pooling"):
        load_spec(base, pooling="median")


def test_max_input_length_sources(base):
    assert load_spec(base).max_input_length == 128
    (base / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    assert load_spec(base).max_input_length == 64
    roberta = load_spec(tm.make_model("roberta", "base"))
    assert roberta.position_offset == 2 and roberta.max_input_length == 128


def test_errors_name_file_and_field(base):
    config = json.loads((base / "config.json").read_text())
    config["model_type"] = "unheard-of"
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="model_type.*unheard-of"):
        tei_jax.load(str(base), pooling="mean")
    (base / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json: invalid JSON"):
        load_spec(base)
    (base / "tokenizer.json").unlink()
    (base / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="tokenizer.json is required"):
        tei_jax.load(str(base))


def test_unsupported_position_embedding_named(base):
    config = json.loads((base / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="position_embedding_type"):
        tei_jax.load(str(base))


def test_dense_and_normalize_modules_match_sentence_transformers(base):
    """A Dense(32 -> 8, tanh) module after mean pooling, checked against sentence-transformers."""
    import torch
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer

    tm.write_pooling(base, "mean")
    (base / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (base / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    dense = base / "2_Dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 8, "bias": True,
                                                   "activation_function": "torch.nn.modules.activation.Tanh"}))
    torch.manual_seed(0)
    save_file({"linear.weight": torch.randn(8, 32), "linear.bias": torch.randn(8)}, str(dense / "model.safetensors"))
    (base / "3_Normalize").mkdir()
    spec = load_spec(base)
    assert spec.embedding_dim == 8 and spec.has_normalize_module
    model = tei_jax.load(str(base), max_batch_tokens=256)
    texts = tm.random_texts(np.random.default_rng(9), 5, 2, 20)
    ours = model.embed(texts)
    ref = SentenceTransformer(str(base), device="cpu").encode(texts, convert_to_numpy=True)
    assert ours.shape == (5, 8)
    assert np.abs(ours - ref).max() < 1e-5


def test_a_folder_saved_by_sentence_transformers_6_keeps_its_modules(tmp_path):
    """sentence-transformers 6 names modules `sentence_transformers.base.modules.dense.Dense` and
    writes `"pooling_mode": "mean"`: the Dense and Normalize modules must still be applied."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense, Normalize

    original = SentenceTransformer(str(tm.minilm_dir()), device="cpu")
    torch.manual_seed(0)
    saved = tmp_path / "st6"
    SentenceTransformer(modules=[original[0], original[1], Dense(384, 16), Normalize()], device="cpu").save(str(saved))
    assert "base.modules.dense.Dense" in (saved / "modules.json").read_text()
    spec = load_spec(saved)
    assert spec.pooling == "mean" and spec.embedding_dim == 16 and spec.has_normalize_module
    texts = ["What is Deep Learning?", "a short one", "JAX compiles the forward pass once per shape"]
    ours = tei_jax.load(str(saved), max_batch_tokens=256).embed(texts)
    ref = SentenceTransformer(str(saved), device="cpu").encode(texts, convert_to_numpy=True)
    assert ours.shape == (3, 16)
    assert np.abs(ours - ref).max() < 1e-5


def test_sentence_transformers_6_pooling_mode_combinations_are_refused(base):
    (base / "1_Pooling").mkdir(exist_ok=True)
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": ["mean", "max"]}))
    with pytest.raises(ModelLoadError, match="pooling_mode"):
        load_spec(base)

