"""ONNX Runtime as an engine-mode peer: on CPU it is what TEI's own backend (`backends/ort`) and
FastEmbed run, so it is the alternative a TEI user on CPU actually has.

The folder's weights are exported once per run with torch's ONNX exporter (the dynamo one, which
needs onnxscript) into a temporary folder, with dynamic batch and sequence axes, then handed to
onnxruntime's transformer optimizer (attention, LayerNorm, GELU and bias fusions: what optimum's
-O2 does) when it recognises the model, and run with every core. Each call is handled the way
sentence-transformers handles one: sorted by length, split into forwards of `batch_size`, each
padded to its longest member; pooling (from 1_Pooling/config.json) and L2 normalisation in NumPy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

NAME = "onnxruntime"


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """An exported model: its file, its input names, and what the optimizer made of it."""

    path: Path
    inputs: tuple[str, ...]
    optimized: bool
    fused_ops: dict[str, int]


def pooling_mode(folder: Path) -> str:
    """"cls", "mean" or "lasttoken", from the sentence-transformers pooling config (mean if absent)."""
    path = Path(folder) / "1_Pooling" / "config.json"
    if not path.exists():
        return "mean"
    config = json.loads(path.read_text())
    for key, mode in (("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "lasttoken"),
                      ("pooling_mode_mean_tokens", "mean")):
        if config.get(key):
            return mode
    raise ValueError(f"{path}: the onnxruntime peer pools by cls, mean or lasttoken only")


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """[batch, seq, hidden] states and a [batch, seq] 0/1 mask (right-padded) -> [batch, hidden]."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "lasttoken":
        return hidden[np.arange(len(hidden)), mask.sum(axis=1) - 1]
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def export(folder: Path, out_dir: Path, optimize: bool = True) -> OnnxExport:
    """torch.onnx export of the folder's base model (last hidden state out) as `model.onnx`,
    then (`optimize`) onnxruntime's BERT fusions when they apply, as `model-optimized.onnx`;
    the unfused graph is kept when the optimizer fails."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    with_types = getattr(config, "type_vocab_size", 0) > 0

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    names = ("input_ids", "attention_mask") + (("token_type_ids",) if with_types else ())
    example = tuple(torch.ones(2, 16, dtype=torch.long) for _ in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    raw = Path(out_dir) / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(LastHiddenState(model), example, str(raw), input_names=list(names),
                          output_names=["last_hidden_state"], dynamo=True, external_data=False,
                          dynamic_shapes={n: {0: batch, 1: seq} for n in names})
    if not optimize or config.model_type not in ("bert", "roberta", "xlm-roberta", "distilbert"):
        return OnnxExport(raw, names, False, {})
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size)
        fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        path = Path(out_dir) / "model-optimized.onnx"
        optimized.save_model_to_file(str(path))
        return OnnxExport(path, names, True, fused)
    except Exception:  # noqa: BLE001 - the plain export still runs; `optimized` says which
        return OnnxExport(raw, names, False, {})


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session on every core (or `threads`), full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load(folder: Path, max_length: int, batch_size: int = 32, work_dir: Path | None = None,
         threads: int | None = None) -> tuple[Callable[[list[str]], np.ndarray], dict]:
    """An embed function (texts -> normalised [n, hidden] float32) and a description of the
    export (file, optimizer fusions, threads)."""
    from tokenizers import Tokenizer

    out_dir = Path(tempfile.mkdtemp(prefix="tei-jax-onnx-", dir=work_dir))
    exported = export(folder, out_dir)
    runner = session(exported.path, threads)
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    mode = pooling_mode(folder)

    def forward(encodings) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = runner.run(None, {n: feeds[n] for n in exported.inputs})[0]
        return pool(hidden, mask, mode)

    def embed(texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        vectors = np.empty((len(texts), 0), np.float32)
        for start in range(0, len(order), batch_size):
            group = order[start: start + batch_size]
            pooled = forward([encodings[i] for i in group])
            if vectors.shape[1] == 0:
                vectors = np.empty((len(texts), pooled.shape[1]), np.float32)
            vectors[group] = pooled
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    info = {"onnx_file": exported.path.name, "optimized": exported.optimized, "fused_ops": exported.fused_ops,
            "intra_op_threads": runner.get_session_options().intra_op_num_threads,
            "exporter": "torch.onnx (dynamo)", "pooling": mode}
    return embed, info
