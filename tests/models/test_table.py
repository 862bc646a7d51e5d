"""The weight tables, the loader's used/missing check, axis names, the scan plan, typed configs."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models as tm
from safetensors.numpy import load_file, save_file

from tei_jax import models
from tei_jax.config import load_spec
from tei_jax.errors import ModelLoadError
from tei_jax.models import bert
from tei_jax.models.layers import LayerVariant, Norm, Segment, scan_plan
from tei_jax.weights import WeightReader, safetensors_files


def _load(folder):
    spec = load_spec(folder)
    arch = models.build(spec, jnp.float32, "xla")
    return arch, arch.load_params(WeightReader(safetensors_files(folder), jnp.float32, arch.checkpoint_prefixes))


def test_minilm_params_are_stacked_with_an_axis_name_per_dimension():
    arch, params = _load(tm.minilm_dir())
    layer = params["encoder"]["blocks_0"]["layer_0"]
    assert layer["attention"]["q"]["kernel"].shape == (6, 384, 12, 32)  # [layers, embed, heads, head_dim]
    assert layer["attention"]["out"]["kernel"].shape == (6, 12, 32, 384)
    assert layer["mlp"]["up"]["kernel"].shape == (6, 384, 1536)
    axes = arch.param_axes()
    assert axes["encoder"]["blocks_0"]["layer_0"]["attention"]["k"]["kernel"] == ("layers", "embed", "kv_heads", "head_dim")
    assert jax.tree.structure(axes, is_leaf=lambda a: isinstance(a, tuple)) == jax.tree.structure(params)
    for names, array in zip(jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, tuple)), jax.tree.leaves(params)):
        assert len(names) == array.ndim


def test_loader_lists_missing_and_unused_tensors_together(tmp_path):
    folder = tmp_path / "spoiled"
    shutil.copytree(tm.minilm_dir(), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["encoder.layer.3.output.dense.bias"]
    tensors["encoder.layer.3.output.dense.extra"] = np.zeros(2, np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError) as error:
        _load(folder)
    message = str(error.value)
    assert "1 tensors missing from the checkpoint: encoder.layer.3.output.dense.bias" in message
    assert "1 checkpoint tensors not used by the model: encoder.layer.3.output.dense.extra" in message


def test_scan_plan_groups_repeated_layer_patterns():
    plain, local, first = LayerVariant(), LayerVariant(window=4, local_rope=True), LayerVariant(attn_norm=False)
    assert scan_plan([plain] * 24) == (Segment(0, 1, 24),)
    # ModernBERT: layer 0 alone, then (local, local, global) groups.
    modern = [first] + [local, local, plain] * 7
    assert scan_plan(modern) == (Segment(0, 1, 1), Segment(1, 3, 7))
    # Qwen2 max_window_layers: two runs; Nomic MoE every other layer: pairs.
    assert scan_plan([plain] * 3 + [local] * 5) == (Segment(0, 1, 3), Segment(3, 1, 5))
    moe = LayerVariant(moe=True)
    assert scan_plan([plain, moe] * 6) == (Segment(0, 2, 6),)
    assert [s.layer(step, 1) for s in scan_plan([plain, moe] * 3) for step in range(s.repeats)] == [1, 3, 5]


def test_norm_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="batchnorm"):
        Norm("batchnorm", 1e-5).init(jax.random.PRNGKey(0), jnp.ones((1, 4)))


def test_typed_config_names_the_field():
    config = load_spec(tm.minilm_dir()).config
    cfg = bert.BertConfig.parse(config)
    assert (cfg.num_layers, cfg.head_dim, cfg.activation.value) == (6, 32, "gelu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_layers = 3
    for field, bad in (("hidden_act", "mish"), ("num_hidden_layers", "six"), ("position_embedding_type", "relative")):
        with pytest.raises(ModelLoadError, match=f"config.json: field '{field}'"):
            bert.BertConfig.parse({**config, field: bad})
    with pytest.raises(ModelLoadError, match="config.json: field 'vocab_size' is missing"):
        bert.BertConfig.parse({k: v for k, v in config.items() if k != "vocab_size"})
