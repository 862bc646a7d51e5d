"""Checkpoint reading: sharded indexes, dtype on load, unused and missing weights by name."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm
from safetensors.numpy import load_file, save_file

import tei_jax
from tei_jax.errors import ModelLoadError
from tei_jax.weights import WeightReader, safetensors_files


def _shard(folder, dest):
    shutil.copytree(folder, dest)
    tensors = load_file(str(dest / "model.safetensors"))
    (dest / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for file, members in parts.items():
        save_file({n: tensors[n] for n in members}, str(dest / file))
        weight_map.update({n: file for n in members})
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_checkpoint_gives_same_embeddings(tmp_path):
    folder = tm.make_model("bert", "base")
    tm.write_pooling(folder, "mean")
    _shard(folder, tmp_path / "sharded")
    assert len(safetensors_files(tmp_path / "sharded")) == 2
    texts = ["sharded weights", "load the same"]
    a = tm.load_cached(folder).embed(texts)
    b = tei_jax.load(str(tmp_path / "sharded"), max_batch_tokens=256).embed(texts)
    assert np.abs(a - b).max() < 1e-7


def test_reader_casts_and_tracks_usage():
    folder = tm.make_model("bert", "classification", num_labels=2)
    reader = WeightReader(safetensors_files(folder), jnp.bfloat16, prefixes=("bert.",))
    assert reader.prefix == "bert."
    emb = reader.get("embeddings.word_embeddings.weight")
    assert emb.dtype == jnp.bfloat16
    assert "bert.embeddings.word_embeddings.weight" not in reader.unused()
    assert "classifier.weight" in reader.unused()
    with pytest.raises(ModelLoadError, match="weight 'bert.nope.weight' is missing"):
        reader.get("nope.weight")
    assert reader.resolve("/classifier.weight") == "classifier.weight"
    assert reader.resolve("nope.weight|embeddings.word_embeddings.weight") == "bert.embeddings.word_embeddings.weight"
    assert reader.resolve("nope.weight") is None and reader.display("nope.weight") == "bert.nope.weight"


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        safetensors_files(tmp_path)
