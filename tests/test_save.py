"""`Model.save_pretrained` (tei_jax/save.py, the weight table's `export`): exact round trips.

A saved folder reloads with exactly the parameters it was given (bitwise, float32), keeps the
checkpoint's tensor names and shapes, and transformers loads it with no missing or unexpected
weights; sentence-transformers gives our vectors from it (max abs error 1e-5).
"""

import json

import families
import jax
import numpy as np
import pytest
import tiny_models as tm
from safetensors.numpy import load_file, save_file

import tei_jax


def _perturbed(params, seed=0):
    """Parameters unlike the checkpoint's, so a save that ignored them would be caught."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(tree, [np.asarray(a) + 0.01 * rng.standard_normal(a.shape).astype(np.float32)
                                     for a in leaves])


def _equal_trees(a, b) -> bool:
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(jax.tree.leaves(same))


@pytest.mark.parametrize("name", ["bert", "nomic", "modernbert", "jina", "mpnet", "qwen3", "deberta"])
def test_save_then_load_is_exact(name, tmp_path):
    model = families.load(name)
    tuned = _perturbed(model.params)
    saved = model.save_pretrained(tmp_path / "saved", params=tuned)
    reloaded = tei_jax.load(str(saved), max_batch_tokens=256)
    assert _equal_trees(reloaded.params, tuned)
    original = load_file(str(model.spec.model_dir / "model.safetensors"))
    written = load_file(str(saved / "model.safetensors"))
    assert {k: v.shape for k, v in written.items()} == {k: v.shape for k, v in original.items()}
    batch = model.batch(["round trip"])
    assert np.abs(np.asarray(reloaded.apply(reloaded.params, batch)) - np.asarray(model.apply(tuned, batch))).max() < 1e-5


def test_unchanged_params_save_the_checkpoint_bit_for_bit(tmp_path):
    model = families.load("modernbert")  # fused Wqkv and gate/up: the split conversions run backwards
    saved = model.save_pretrained(tmp_path / "same")
    original = load_file(str(model.spec.model_dir / "model.safetensors"))
    written = load_file(str(saved / "model.safetensors"))
    assert original.keys() == written.keys()
    assert all(np.array_equal(original[k], written[k]) for k in original)


@pytest.mark.parametrize("name, auto", [("bert", "AutoModel"), ("modernbert", "AutoModel"),
                                         ("classifier", "AutoModelForSequenceClassification")])
def test_transformers_loads_the_saved_folder_with_no_missing_or_unexpected_weights(name, auto, tmp_path):
    import torch
    import transformers

    model = tm.load_cached(families.CLASSIFIER()) if name == "classifier" else families.load(name)
    tuned = _perturbed(model.params, seed=3)
    saved = model.save_pretrained(tmp_path / "hf", params=tuned)
    loaded, info = getattr(transformers, auto).from_pretrained(saved, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"], info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids = list(model.tokenizer.encode("the saved model", truncate=True).input_ids)
    with torch.no_grad():
        out = loaded.eval()(input_ids=torch.tensor([ids]))
    batch = model.batch(["the saved model"])
    if name == "classifier":
        ours = np.asarray(model.apply(tuned, batch, "predict"))
        assert np.abs(out.logits.numpy() - ours).max() < 1e-5
    else:
        ours = np.asarray(model.apply(tuned, batch, "embed_all"))[0, : len(ids)]
        assert np.abs(out.last_hidden_state[0].numpy() - ours).max() < 1e-5


@pytest.mark.slow  # 23 s; keeps the default suite under 10 minutes on 2 cores
def test_sentence_transformers_gives_the_same_vectors_from_a_saved_minilm(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = tm.load_cached(tm.minilm_dir())
    tuned = _perturbed(model.params, seed=5)
    saved = model.save_pretrained(tmp_path / "minilm", params=tuned)
    assert json.loads((saved / "modules.json").read_text())[1]["path"] == "1_Pooling"
    texts = ["What is Deep Learning?", "JAX is fast", "a saved model"]
    theirs = SentenceTransformer(str(saved), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.abs(theirs - tei_jax.load(str(saved), max_batch_tokens=256).embed(texts)).max() < 1e-5
    assert np.abs(theirs - model.embed(texts)).max() > 1e-4  # the tuned weights were written


def _with_dense(dest):
    """The tiny BERT with Pooling -> Dense(32 -> 8, tanh) -> Normalize modules."""
    import shutil

    shutil.copytree(families.EMBEDDERS["bert"][0](), dest)
    (dest / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (dest / "2_Dense").mkdir()
    (dest / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 8, "bias": True,
         "activation_function": "torch.nn.modules.activation.Tanh"}))
    rng = np.random.default_rng(0)
    save_file({"linear.weight": rng.standard_normal((8, 32)).astype(np.float32),
               "linear.bias": rng.standard_normal(8).astype(np.float32)}, str(dest / "2_Dense" / "model.safetensors"))
    (dest / "3_Normalize").mkdir()
    return dest


def test_dense_modules_are_saved_from_params(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = tei_jax.load(str(_with_dense(tmp_path / "dense")), max_batch_tokens=256)
    tuned = _perturbed(model.params, seed=7)
    saved = model.save_pretrained(tmp_path / "saved", params=tuned)
    reloaded = tei_jax.load(str(saved), max_batch_tokens=256)
    assert _equal_trees(reloaded.params, tuned)
    texts = ["dense modules", "are saved too"]
    theirs = SentenceTransformer(str(saved), device="cpu").encode(texts)
    assert np.abs(theirs - reloaded.embed(texts)).max() < 1e-5


def test_saving_into_the_source_folder_is_refused():
    model = families.load("bert")
    with pytest.raises(ValueError, match="loaded from"):
        model.save_pretrained(model.spec.model_dir)
