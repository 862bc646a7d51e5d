"""safetensors (single file or sharded index) -> host tensors by name -> device.

A family's weight table (tei_jax/models/table.py) says where each of its parameters lives in
the published checkpoint; the `WeightReader` here reads tensors one at a time as NumPy arrays
already in the target dtype (so a bfloat16 7B model never has a float32 copy in host memory)
and remembers which names were used, so the table's loader can report the missing and the
unused ones by name. `tei_jax.load` places each parameter on its devices as it is read
(tei_jax/sharding.py `Placement.place`); `to_device` moves a finished host tree to the
default device leaf by leaf, freeing each host array as it goes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import jax
import numpy as np
from safetensors import safe_open

from .errors import ModelLoadError

# Buffers that checkpoints carry but no computation reads.
_IGNORED_SUFFIXES = ("position_ids", "rotary_emb.inv_freq", "num_batches_tracked")


def safetensors_files(model_dir: Path) -> list[Path]:
    """The checkpoint files of a folder: model.safetensors or the shards of its index."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError(f"{index}: field 'weight_map' is missing")
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    if (model_dir / "pytorch_model.bin").is_file():
        raise ModelLoadError(
            f"{model_dir}: only pytorch_model.bin found; convert it to model.safetensors "
            "(safetensors' convert script or `model.save_pretrained(..., safe_serialization=True)`)"
        )
    raise ModelLoadError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


class WeightReader:
    """Lazy access to checkpoint tensors by name, tracking what was used."""

    def __init__(self, files: Sequence[Path], dtype, prefixes: Iterable[str] = ("",)):
        self.dtype = np.dtype(dtype)
        self._handles = [safe_open(str(path), framework="numpy") for path in files]
        self._where = {}
        for handle in self._handles:
            for name in handle.keys():
                self._where[name] = handle
        # Pick the prefix the checkpoint uses (e.g. "bert." in *ForSequenceClassification).
        self.prefix = next(
            (p for p in prefixes if any(n.startswith(p) for n in self._where) and p), ""
        )
        self._used: set[str] = set()

    def names(self) -> list[str]:
        return sorted(self._where)

    def has(self, name: str, prefixed: bool = True) -> bool:
        return self._full(name, prefixed) in self._where

    def _full(self, name: str, prefixed: bool) -> str:
        return self.prefix + name if prefixed else name

    def resolve(self, name: str) -> str | None:
        """The full checkpoint name of a table name ("/x" is a root name, "a|b" is a, else b),
        or None when no spelling exists."""
        for spelling in name.split("|"):
            full = spelling[1:] if spelling.startswith("/") else self.prefix + spelling
            if full in self._where:
                return full
        return None

    def display(self, name: str) -> str:
        """A table name as the checkpoint would spell it (its first spelling), for errors."""
        first = name.split("|")[0]
        return first[1:] if first.startswith("/") else self.prefix + first

    def raw(self, name: str, prefixed: bool = True):
        full = self._full(name, prefixed)
        if full not in self._where:
            raise ModelLoadError(f"weight '{full}' is missing from the checkpoint")
        self._used.add(full)
        return self._where[full].get_tensor(full)

    def get(self, name: str, prefixed: bool = True, dtype=None) -> np.ndarray:
        """A host tensor cast to the target dtype (no copy when it already has it)."""
        tensor = self.raw(name, prefixed)
        target = np.dtype(dtype) if dtype is not None else self.dtype
        return tensor if tensor.dtype == target else tensor.astype(target)

    def unused(self) -> list[str]:
        return sorted(
            n for n in self._where if n not in self._used and not n.endswith(_IGNORED_SUFFIXES)
        )

    # Helpers that produce flax-layout parameter dicts.
    def linear(self, name: str, bias: bool = True, prefixed: bool = True) -> dict:
        """torch Linear [out, in] -> flax Dense {'kernel': [in, out], 'bias'}."""
        params = {"kernel": np.ascontiguousarray(self.get(f"{name}.weight", prefixed).T)}
        if bias:
            params["bias"] = self.get(f"{name}.bias", prefixed)
        return params


def load_dense_module(path: Path, in_features: int, out_features: int, bias: bool, dtype) -> dict:
    """A sentence-transformers Dense module's `linear` weights as a flax Dense dict."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{path}: Dense module needs model.safetensors (pytorch_model.bin is not read)")
    reader = WeightReader([weights], dtype)
    params = reader.linear("linear", bias=bias)
    if params["kernel"].shape != (in_features, out_features):
        raise ModelLoadError(
            f"{weights}: linear.weight has shape {tuple(params['kernel'].shape[::-1])}, "
            f"config says ({out_features}, {in_features})"
        )
    return params


def to_device(tree) -> dict:
    """Move a host parameter tree to the default device one leaf at a time, dropping each host
    array once it is copied, so peak memory stays near one copy of the weights."""
    leaves, treedef = jax.tree.flatten(tree)
    del tree
    for i, leaf in enumerate(leaves):
        leaves[i] = jax.device_put(leaf)
        del leaf
    return jax.tree.unflatten(treedef, leaves)

