"""`Model.save_pretrained`: a loaded (or fine-tuned) model back to a hub-style folder.

The folder is the one the model was loaded from with the weights replaced: config,
tokenizer and sentence-transformers files copied as they are, `model.safetensors` written with
the checkpoint's own tensor names, shapes and dtypes (the family's weight table run backwards,
tei_jax/models/table.py `export`), and each Dense module's `model.safetensors` rewritten from
`params["dense"]`. So tei_jax, TEI's router, transformers and sentence-transformers read it as
they read the original. Other weight formats of the source (pytorch_model.bin, ONNX, OpenVINO)
would hold the old weights, so they are not copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from safetensors.numpy import save_file

from .weights import WeightReader, safetensors_files

if TYPE_CHECKING:
    from .model import Model

# Files and folders of a model folder that hold weights in a format we do not write.
STALE_WEIGHTS = ("*.safetensors", "model.safetensors.index.json", "*.bin", "*.h5", "*.msgpack", "*.ot",
                 "*.onnx", "onnx", "openvino", ".git")


def save_pretrained(model: "Model", path: str | Path, params: dict | None = None) -> Path:
    """Write `model` with `params` (default: `model.params`) to the folder `path`; returns it."""
    source = Path(model.spec.model_dir).resolve()
    dest = Path(path).resolve()
    if dest == source or source in dest.parents:
        raise ValueError(f"{dest}: cannot save into the folder the model was loaded from")
    params = jax.device_get(params if params is not None else model.params)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*STALE_WEIGHTS), dirs_exist_ok=True)
    reader = WeightReader(safetensors_files(source), np.float32, model.engine.arch.checkpoint_prefixes)
    tensors = model.engine.arch.table.export(params, reader)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    for i, dense in enumerate(model.spec.dense):
        layer = params["dense"][f"dense_{i}"]
        out = {"linear.weight": np.ascontiguousarray(np.asarray(layer["kernel"], np.float32).T)}
        if dense.bias:
            out["linear.bias"] = np.asarray(layer["bias"], np.float32)
        folder = dest / Path(dense.path).resolve().relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return dest
